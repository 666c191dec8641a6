"""Read-only public links to a conversation: the owner creates and revokes them, anyone who
has one reads the conversation as it stood when the link was made, and nothing else.

A link keeps a copy of its title and messages (ShareLink.snapshot_of). It is made only when no
reply is being written: a link freezes finished replies, never half of one, and the owner is
told to wait rather than given a link that stops mid-sentence.
"""

import uuid

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from conversations.access import get_conversation_for_user
from conversations.models import Conversation, ShareLink
from conversations.rendering import render_markdown_cached
from conversations.replies.sweeper import reply_streaming

PANEL_TEMPLATE = "conversations/share_panel.html"
REPLY_IN_PROGRESS = (
    "A reply is still being written. Create the link once it has finished: a link shows "
    "finished replies only."
)


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
    conversation = get_conversation_for_user(request.user, conversation_id)
    with transaction.atomic():
        # Locked, as a send locks it to store a turn: no reply starts while the copy is made.
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if active_share(locked) is None:
            if reply_streaming(locked):
                return _panel(request, locked, refusal=REPLY_IN_PROGRESS)
            ShareLink.snapshot_of(locked)
    return _panel(request, conversation)


@login_required
@require_POST
def share_revoke(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """End every link to the conversation at once: they answer 404 from now on."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    # The copies go too: a revoked link answers 404 and keeps nothing of the conversation.
    revoked = conversation.share_links.filter(revoked_at__isnull=True).update(
        revoked_at=timezone.now(), title="", snapshot=[]
    )
    return _panel(request, conversation, revoked=bool(revoked))


@require_GET
def shared_conversation(request: HttpRequest, token: str) -> HttpResponse:
    """The public, read-only page of a share link. Revoked and unknown links are both 404."""
    share = ShareLink.objects.filter(token=token, revoked_at__isnull=True).first()
    if share is None:
        raise Http404("No such link.")
    shown = share.messages()
    render_markdown_cached(shown)
    context = {"share": share, "chat_messages": shown}
    response = render(request, "conversations/share.html", context)
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    # Public, but its owner can revoke it at any moment: no cache, a proxy's or the browser's,
    # may keep a copy that outlives the link.
    response["Cache-Control"] = "private, no-store"
    return response
