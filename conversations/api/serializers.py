"""What the API returns: a conversation and a message as JSON (the shapes api/schema.py
describes)."""

from datetime import datetime

from conversations.llm import catalogue
from conversations.models import Conversation, Message


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def conversation_json(conversation: Conversation) -> dict:
    chosen = catalogue.for_conversation(conversation.metadata)
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "created_at": _timestamp(conversation.created_at),
        "updated_at": _timestamp(conversation.updated_at),
        "pinned": conversation.pinned_at is not None,
        "archived": conversation.archived_at is not None,
        "provider": chosen.provider.slug,
        "model": chosen.model,
    }


def message_json(message: Message) -> dict:
    metadata = message.metadata
    return {
        "id": str(message.pk),
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": _timestamp(message.created_at),
        "model": metadata.get("model"),
        "provider": metadata.get("provider"),
        "left_out": metadata.get("left_out"),
        "usage": metadata.get("usage"),
        "finish_reason": metadata.get("finish_reason"),
        "error": metadata.get("error"),
    }
