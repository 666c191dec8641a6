from django.urls import path

from . import theme, usage_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("usage/", usage_views.usage_page, name="usage"),
    path("theme/", theme.set_theme, name="theme_set"),
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
]
