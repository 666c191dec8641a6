from django.urls import path

from . import exports, sharing, views

urlpatterns = [
    path("", views.home, name="home"),
    path("c/new/", views.start_conversation, name="conversation_start"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:conversation_id>/messages/", views.send_message, name="message_send"),
    path("c/<uuid:conversation_id>/earlier/", views.earlier_messages, name="earlier_messages"),
    path("c/<uuid:conversation_id>/stop/", views.stop_reply, name="reply_stop"),
    path("c/<uuid:conversation_id>/regenerate/", views.regenerate_reply, name="reply_regenerate"),
    path(
        "c/<uuid:conversation_id>/messages/<uuid:message_id>/",
        views.message_detail,
        name="message_detail",
    ),
    path(
        "c/<uuid:conversation_id>/messages/<uuid:message_id>/edit/",
        views.edit_message,
        name="message_edit",
    ),
    path(
        "c/<uuid:conversation_id>/export.md",
        exports.export_markdown,
        name="conversation_export_markdown",
    ),
    path(
        "c/<uuid:conversation_id>/export.json",
        exports.export_json,
        name="conversation_export_json",
    ),
    path("export/all.json", exports.export_all, name="export_all"),
    path("c/<uuid:conversation_id>/share/", sharing.share_create, name="share_create"),
    path("c/<uuid:conversation_id>/share/revoke/", sharing.share_revoke, name="share_revoke"),
    path("s/<slug:token>/", sharing.shared_conversation, name="share"),
]
