from django.urls import path

from .consumers import ConversationConsumer

websocket_urlpatterns = [
    path("ws/c/<uuid:conversation_id>/", ConversationConsumer.as_asgi(), name="ws_conversation"),
]
