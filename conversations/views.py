import uuid

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import aget_object_or_404, get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from . import generation
from .models import Conversation, Message, recent_conversations

CHAT_TEMPLATE = "conversations/chat.html"


class MessageForm(forms.Form):
    text = forms.CharField(
        strip=True,
        error_messages={"required": "Write a message first."},
    )

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        limit = settings.CHAT_MAX_MESSAGE_CHARS
        if len(text) > limit:
            raise forms.ValidationError(
                f"This message is {len(text):,} characters long; the limit is {limit:,}."
            )
        return text


def _get_conversation_for_user(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    return get_object_or_404(Conversation, pk=conversation_id, owner=request.user)


def _chat_context(request: HttpRequest, conversation: Conversation | None) -> dict:
    messages = list(conversation.messages.order_by("created_at")) if conversation else []
    return {
        "conversation": conversation,
        "current_conversation": conversation,
        "conversations": recent_conversations(request.user.pk),
        "messages": messages,
        "busy": any(m.is_streaming for m in messages),
        "form": MessageForm(),
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    }


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The new-chat page: an empty conversation area and the composer."""
    return render(request, CHAT_TEMPLATE, _chat_context(request, None))


@login_required
def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = _get_conversation_for_user(request, conversation_id)
    generation.mark_stale_replies_interrupted(conversation.pk)
    return render(request, CHAT_TEMPLATE, _chat_context(request, conversation))


def _composer(
    request: HttpRequest, conversation: Conversation | None, form: MessageForm, busy: bool
) -> HttpResponse:
    context = {
        "conversation": conversation,
        "form": form,
        "busy": busy,
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    }
    return render(request, f"{CHAT_TEMPLATE}#composer", context)


async def _send(
    request: HttpRequest, conversation: Conversation, form: MessageForm, *, is_new: bool
) -> HttpResponse:
    try:
        await generation.begin(conversation, form.cleaned_data["text"])
    except generation.ReplyInProgress:
        form.add_error(None, "Wait for the current reply to finish, or stop it, before sending.")
        return await sync_to_async(_composer)(request, conversation, form, True)
    if is_new or not request.htmx:
        if request.htmx:
            return HttpResponseClientRedirect(conversation.get_absolute_url())
        return redirect(conversation)
    return await sync_to_async(_composer)(request, conversation, MessageForm(), True)


@login_required
@require_POST
async def start_conversation(request: HttpRequest) -> HttpResponse:
    """Create a conversation from its first message and start the reply."""
    form = MessageForm(request.POST)
    if not form.is_valid():
        return await sync_to_async(_composer)(request, None, form, False)
    user = await request.auser()
    conversation = await Conversation.objects.acreate(owner=user)
    return await _send(request, conversation, form, is_new=True)


@login_required
@require_POST
async def send_message(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    user = await request.auser()
    conversation = await aget_object_or_404(Conversation, pk=conversation_id, owner=user)
    form = MessageForm(request.POST)
    if not form.is_valid():
        return await sync_to_async(_composer)(request, conversation, form, False)
    return await _send(request, conversation, form, is_new=False)


@login_required
@require_POST
async def stop_reply(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """Stop the conversation's streaming reply, whichever process generates it."""
    user = await request.auser()
    conversation = await aget_object_or_404(Conversation, pk=conversation_id, owner=user)
    reply = await (
        Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
        .order_by("-created_at")
        .afirst()
    )
    if reply:
        await generation.request_stop(reply.pk)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect(conversation)
