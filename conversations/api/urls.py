from django.urls import path, re_path

from conversations.api import docs as api_docs
from conversations.api import views as api

urlpatterns = [
    path("v1/conversations", api.conversations, name="api_conversations"),
    path("v1/conversations/<uuid:conversation_id>", api.conversation, name="api_conversation"),
    path("v1/conversations/<uuid:conversation_id>/messages", api.messages, name="api_messages"),
    path("v1/conversations/<uuid:conversation_id>/stop", api.stop, name="api_stop"),
    path("v1/openapi.json", api_docs.openapi, name="api_openapi"),
    path("docs/", api_docs.docs, name="api_docs"),
    re_path(r"^(?P<path>.*)$", api.unknown, name="api_unknown"),
]
