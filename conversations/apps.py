from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "conversations"

    def ready(self) -> None:
        # Registered on import: the system checks and the signal receivers.
        from conversations import checks  # noqa: F401
        from conversations.sockets import security  # noqa: F401
