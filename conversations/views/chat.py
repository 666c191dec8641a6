import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from conversations import errors, forms, search, sidebar
from conversations.access import (
    aget_conversation_for_user,
    aget_message_for_user,
    get_conversation_for_user,
    get_message_for_user,
)
from conversations.actions.messages import (
    do_edit_message,
    do_regenerate_reply,
    do_send_message,
    do_start_conversation,
    do_stop_reply,
)
from conversations.llm import catalogue
from conversations.models import Conversation, Message, current_messages
from conversations.replies import running, sweeper, turns
from conversations.replies.quota import UserLimitReached
from conversations.views.model_settings import settings_for_new_conversation

CHAT_TEMPLATE = "conversations/chat.html"


def _chat_context(
    request: HttpRequest, conversation: Conversation | None, *, limit: int | None = None
) -> dict:
    limit = limit or settings.CHAT_PAGE_MESSAGES
    messages = current_messages(conversation, limit=limit) if conversation else []
    return {
        "conversation": conversation,
        "current_conversation_id": conversation.pk if conversation else None,
        "sidebar": sidebar.sidebar_page(request.user.pk),
        "chat_messages": messages,
        "last_message_id": messages[-1].pk if messages else "",
        "busy": any(m.is_streaming for m in messages),
        "form": forms.MessageForm(),
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        **_settings_context(request, conversation),
    }


def _settings_context(request: HttpRequest, conversation: Conversation | None) -> dict:
    metadata = conversation.metadata if conversation else forms.defaults_for(request.user)
    return {
        "settings_form": forms.form_for(metadata),
        "chat_model": catalogue.for_conversation(metadata),
    }


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The new-chat page: an empty conversation area and the composer."""
    return render(request, CHAT_TEMPLATE, _chat_context(request, None))


@login_required
def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, conversation_id)
    sweeper.mark_stale_replies_interrupted(conversation.pk)
    # A search result links to `?message=<id>`: the page then reaches back to that message.
    limit = search.messages_to_show(conversation, request.GET.get("message"))
    return render(request, CHAT_TEMPLATE, _chat_context(request, conversation, limit=limit))


@login_required
def earlier_messages(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The run of messages before `?before=<message id>`, for "Show earlier messages"."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    try:
        before_id = uuid.UUID(request.GET.get("before", ""))
    except ValueError:
        raise Http404("No such message.") from None
    before = get_object_or_404(conversation.messages, pk=before_id, superseded_by__isnull=True)
    messages = current_messages(conversation, before=before, limit=settings.CHAT_PAGE_MESSAGES)
    context = {"conversation": conversation, "chat_messages": messages}
    return render(request, f"{CHAT_TEMPLATE}#message-run", context)


def _composer(request: HttpRequest, conversation: Conversation | None, form: forms.MessageForm):
    """The composer again, with the form's errors or emptied after a send: the field alone for
    htmx, the whole page otherwise."""
    if not request.htmx:
        context = {**_chat_context(request, conversation), "form": form}
        return render(request, CHAT_TEMPLATE, context)
    context = {"form": form, "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS}
    return render(request, f"{CHAT_TEMPLATE}#composer-field", context)


def _busy(request: HttpRequest, refusal: running.ProcessBusy) -> HttpResponse:
    # Another reply took the last place since the check before the view (refused_when_busy):
    # the same answer as that check's.
    return errors.overloaded(request, refusal.message, refusal.retry_after)


@errors.refused_when_busy
@login_required
@require_POST
async def start_conversation(request: HttpRequest) -> HttpResponse:
    """Create a conversation from its first message and start the reply."""
    form = forms.MessageForm(request.POST)
    if not form.is_valid():
        return await sync_to_async(_composer)(request, None, form)
    user = await request.auser()
    metadata, problems = await sync_to_async(settings_for_new_conversation)(request)
    if problems:
        for problem in problems:
            form.add_error(None, problem)
        return await sync_to_async(_composer)(request, None, form)
    try:
        conversation, _ = await do_start_conversation(user, metadata, form.cleaned_data["text"])
    except running.ProcessBusy as refusal:
        return _busy(request, refusal)
    except UserLimitReached as refusal:
        form.add_error(None, refusal.message)
        return await sync_to_async(_composer)(request, None, form)
    if request.htmx:
        return HttpResponseClientRedirect(conversation.get_absolute_url())
    return redirect(conversation)


def _refusal(request: HttpRequest, message: str) -> HttpResponse:
    """Say why an action was refused, in the composer's error area, whatever the swap style."""
    return render(request, f"{CHAT_TEMPLATE}#composer-errors", {"refusal": message, "oob": True})


@errors.refused_when_busy
@login_required
@require_POST
async def regenerate_reply(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """Generate the last reply again; the previous one stays as an earlier version."""
    conversation = await aget_conversation_for_user(await request.auser(), conversation_id)
    try:
        await do_regenerate_reply(conversation)
    except turns.NothingToRegenerate:
        return await sync_to_async(_refusal)(request, "There is no reply to regenerate.")
    except (turns.ReplyInProgress, UserLimitReached, running.ProcessBusy) as refusal:
        return await sync_to_async(_refusal)(request, refusal.message)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect(conversation)


@login_required
def message_detail(
    request: HttpRequest, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> HttpResponse:
    conversation, message = get_message_for_user(request.user, conversation_id, message_id)
    message.versions = list(message.earlier_versions.order_by("created_at"))
    context = {"conversation": conversation, "message": message}
    return render(request, f"{CHAT_TEMPLATE}#message", context)


@errors.refused_when_busy
@login_required
async def edit_message(
    request: HttpRequest, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> HttpResponse:
    """GET: the last message as a form. POST: send the edited text in its place."""
    conversation, message = await aget_message_for_user(
        await request.auser(), conversation_id, message_id, role=Message.Role.USER
    )
    form = forms.MessageForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            await do_edit_message(conversation, message, form.cleaned_data["text"])
        except turns.NothingToRegenerate:
            form.add_error(None, "Only your last message can be edited.")
        except (turns.ReplyInProgress, UserLimitReached, running.ProcessBusy) as refusal:
            form.add_error(None, refusal.message)
        else:
            if request.htmx:
                return HttpResponse(status=204)
            return redirect(conversation)
    elif request.method not in {"GET", "POST"}:
        return HttpResponseNotAllowed(["GET", "POST"])
    context = {
        "conversation": conversation,
        "message": message,
        "form": form,
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    }
    return await sync_to_async(render)(request, f"{CHAT_TEMPLATE}#message-edit", context)


@errors.refused_when_busy
@login_required
@require_POST
async def send_message(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = await aget_conversation_for_user(await request.auser(), conversation_id)
    form = forms.MessageForm(request.POST)
    if not form.is_valid():
        return await sync_to_async(_composer)(request, conversation, form)
    try:
        await do_send_message(conversation, form.cleaned_data["text"])
    except running.ProcessBusy as refusal:
        return _busy(request, refusal)
    except (turns.ReplyInProgress, UserLimitReached) as refusal:
        form.add_error(None, refusal.message)
        return await sync_to_async(_composer)(request, conversation, form)
    if not request.htmx:
        return redirect(conversation)
    return await sync_to_async(_composer)(request, conversation, forms.MessageForm())


@login_required
@require_POST
async def stop_reply(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """Stop the conversation's streaming reply, whichever process generates it."""
    conversation = await aget_conversation_for_user(await request.auser(), conversation_id)
    await do_stop_reply(conversation)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect(conversation)
