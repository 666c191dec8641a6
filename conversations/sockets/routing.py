from django.urls import path, re_path

from conversations.sockets.consumers import ChatConsumer, UnknownRouteConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi(), name="ws_chat"),
    path("ws/c/<uuid:conversation_id>/", ChatConsumer.as_asgi(), name="ws_conversation"),
    re_path(r"", UnknownRouteConsumer.as_asgi(), name="ws_unknown"),
]
