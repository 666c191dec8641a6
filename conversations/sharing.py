"""Read-only public links to a conversation: the owner creates and revokes them, anyone who
has one reads the conversation as it stood when the link was made, and nothing else."""

import uuid

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from .models import Conversation, ShareLink

PANEL_TEMPLATE = "conversations/rich/share_panel.html"


def _get_conversation_for_user(request: HttpRequest, conversation_id: uuid.UUID) -> Conversation:
    return get_object_or_404(Conversation, pk=conversation_id, owner=request.user)


def active_share(conversation: Conversation) -> ShareLink | None:
    return conversation.share_links.filter(revoked_at__isnull=True).order_by("-created_at").first()


def share_panel_context(request: HttpRequest, conversation: Conversation, **extra) -> dict:
    share = active_share(conversation)
    share_url = request.build_absolute_uri(share.get_absolute_url()) if share else ""
    return {"conversation": conversation, "share": share, "share_url": share_url, **extra}


def _panel(request: HttpRequest, conversation: Conversation, **extra) -> HttpResponse:
    if not request.htmx:
        return redirect(conversation)
    context = share_panel_context(request, conversation, open=True, **extra)
    return render(request, PANEL_TEMPLATE, context)


@login_required
@require_POST
def share_create(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """Make the conversation's share link, or keep the one it has."""
    conversation = _get_conversation_for_user(request, conversation_id)
    with transaction.atomic():
        Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        if active_share(conversation) is None:
            ShareLink.objects.create(conversation=conversation)
    return _panel(request, conversation)


@login_required
@require_POST
def share_revoke(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """End every link to the conversation at once: they answer 404 from now on."""
    conversation = _get_conversation_for_user(request, conversation_id)
    revoked = conversation.share_links.filter(revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    return _panel(request, conversation, revoked=bool(revoked))


@require_GET
def shared_conversation(request: HttpRequest, token: str) -> HttpResponse:
    """The public, read-only page of a share link. Revoked and unknown links are both 404."""
    share = (
        ShareLink.objects.select_related("conversation")
        .filter(token=token, revoked_at__isnull=True)
        .first()
    )
    if share is None:
        raise Http404("No such link.")
    context = {
        "share": share,
        "conversation": share.conversation,
        "chat_messages": share.messages(),
    }
    response = render(request, "conversations/share.html", context)
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    # The page changes when the link is revoked: no shared cache may keep it.
    response["Cache-Control"] = "private, no-store"
    return response
