from django.urls import path

from conversations.views import chat as views
from conversations.views import exports, manage, model_settings, sharing, theme, usage

urlpatterns = [
    path("", views.home, name="home"),
    path("usage/", usage.usage_page, name="usage"),
    path("theme/", theme.set_theme, name="theme_set"),
    path("c/new/", views.start_conversation, name="conversation_start"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:conversation_id>/messages/", views.send_message, name="message_send"),
    path("c/<uuid:conversation_id>/earlier/", views.earlier_messages, name="earlier_messages"),
    path(
        "c/<uuid:conversation_id>/settings/",
        model_settings.conversation_settings,
        name="conversation_settings",
    ),
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
        "c/<uuid:conversation_id>/rename/",
        manage.rename_conversation,
        name="conversation_rename",
    ),
    path(
        "c/<uuid:conversation_id>/label/",
        manage.conversation_label,
        name="conversation_label",
    ),
    path("c/<uuid:conversation_id>/pin/", manage.pin_conversation, name="conversation_pin"),
    path(
        "c/<uuid:conversation_id>/unpin/",
        manage.unpin_conversation,
        name="conversation_unpin",
    ),
    path(
        "c/<uuid:conversation_id>/archive/",
        manage.archive_conversation,
        name="conversation_archive",
    ),
    path(
        "c/<uuid:conversation_id>/unarchive/",
        manage.unarchive_conversation,
        name="conversation_unarchive",
    ),
    path(
        "c/<uuid:conversation_id>/delete/",
        manage.delete_conversation,
        name="conversation_delete",
    ),
    path("conversations/", manage.conversation_list, name="conversation_list"),
    path("archive/", manage.archive, name="archive"),
    path("search/", manage.search_conversations, name="search"),
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
