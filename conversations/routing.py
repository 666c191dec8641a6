from django.urls import path

from .consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi(), name="ws_chat"),
    path("ws/c/<uuid:conversation_id>/", ChatConsumer.as_asgi(), name="ws_conversation"),
]
