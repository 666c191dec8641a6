"""Managing conversations (rename, pin, archive, delete), the sidebar's later pages, the archive
and search. Every change is a CSRF-protected POST by the conversation's owner; after each one,
every open page of the owner gets its new sidebar over the websocket."""

import uuid
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from conversations import forms, search, sidebar
from conversations.access import aget_conversation_for_user, get_conversation_for_user
from conversations.actions.conversations import (
    do_archive_conversation,
    do_delete_conversation,
    do_pin_conversation,
    do_rename_conversation,
    do_unarchive_conversation,
    do_unpin_conversation,
)
from conversations.models import TITLE_MAX_LENGTH, Conversation

SIDEBAR_TEMPLATE = "conversations/sidebar.html"
ARCHIVE_PAGE_SIZE = 25
PLACES = ("header", "sidebar")


def _place(request: HttpRequest) -> str:
    """Where the title being renamed is shown: the chat header, or the sidebar."""
    place = request.GET.get("in") or request.POST.get("in")
    return place if place in PLACES else "header"


def _next_url(request: HttpRequest, default: str) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(candidate, {request.get_host()}, request.is_secure()):
        return candidate
    return default


def _sidebar_response(request: HttpRequest) -> HttpResponse:
    """The first page of the sidebar, for the htmx request that changed it."""
    context = {"sidebar": sidebar.sidebar_page(request.user.pk)}
    return render(request, "conversations/chat.html#conversation-list", context)


def _label(request: HttpRequest, conversation: Conversation, place: str) -> HttpResponse:
    if place == "sidebar":
        return render(request, f"{SIDEBAR_TEMPLATE}#sidebar-item", {"item": conversation})
    return render(
        request, "conversations/chat.html#conversation-heading", {"conversation": conversation}
    )


@login_required
@require_GET
def conversation_label(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The title as shown, without its rename form: what Cancel puts back."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    if not request.htmx:
        return redirect(conversation)
    return _label(request, conversation, _place(request))


@login_required
def rename_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """GET: the title as a form, in place. POST: the new title."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    place = _place(request)
    if request.method == "GET":
        form = forms.RenameForm(initial={"title": conversation.title})
    else:
        form = forms.RenameForm(request.POST)
        if form.is_valid():
            do_rename_conversation(conversation, form.cleaned_data["title"])
            if not request.htmx:
                return redirect(_next_url(request, conversation.get_absolute_url()))
            return _label(request, conversation, place)
    context = {
        "conversation": conversation,
        "form": form,
        "place": place,
        "title_max_length": TITLE_MAX_LENGTH,
    }
    if not request.htmx:
        return render(request, "conversations/rename.html", context)
    return render(request, "conversations/rename.html#rename-form", context)


def _change(
    request: HttpRequest, conversation_id: uuid.UUID, action: Callable[[Conversation], None]
) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, conversation_id)
    action(conversation)
    if request.htmx:
        return _sidebar_response(request)
    return redirect(_next_url(request, conversation.get_absolute_url()))


@login_required
@require_POST
def pin_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    return _change(request, conversation_id, do_pin_conversation)


@login_required
@require_POST
def unpin_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    return _change(request, conversation_id, do_unpin_conversation)


@login_required
@require_POST
def archive_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    return _change(request, conversation_id, do_archive_conversation)


@login_required
@require_POST
def unarchive_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    return _change(request, conversation_id, do_unarchive_conversation)


@login_required
async def delete_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """GET: ask to confirm (a dialog for htmx, a page otherwise). POST with confirm=yes: stop
    any reply being written, then delete the conversation and all its messages."""
    conversation = await aget_conversation_for_user(await request.auser(), conversation_id)
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    context = {"conversation": conversation, "next": _next_url(request, "")}
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        template = (
            "conversations/delete.html#delete-dialog"
            if request.htmx
            else "conversations/delete.html"
        )
        return await sync_to_async(render)(request, template, context)
    its_page = conversation.get_absolute_url()
    await do_delete_conversation(conversation)
    home = reverse("home")
    if request.htmx:
        if (request.htmx.current_url_abs_path or "").split("?")[0] == its_page:
            return HttpResponseClientRedirect(home)
        return await sync_to_async(_sidebar_response)(request)
    return redirect(_next_url(request, home))


@login_required
@require_GET
def conversation_list(request: HttpRequest) -> HttpResponse:
    """A later page of the sidebar (`?after=<cursor>`): the items for htmx, else a page."""
    try:
        after = sidebar.Cursor.parse(request.GET["after"]) if "after" in request.GET else None
    except sidebar.BadCursor:
        raise Http404("No such page of conversations.") from None
    page = sidebar.sidebar_page(request.user.pk, after)
    if request.htmx:
        return render(request, f"{SIDEBAR_TEMPLATE}#sidebar-items", {"sidebar": page})
    return render(request, "conversations/list.html", {"sidebar": page})


@login_required
@require_GET
def archive(request: HttpRequest) -> HttpResponse:
    """The owner's archived conversations, most recently archived first."""
    archived = Conversation.objects.filter(owner=request.user, archived_at__isnull=False).order_by(
        "-archived_at", "-id"
    )
    page = Paginator(archived.only("id", "title", "archived_at", "updated_at"), ARCHIVE_PAGE_SIZE)
    return render(
        request,
        "conversations/archive.html",
        {"page": page.get_page(request.GET.get("page")), "archive_url": request.get_full_path()},
    )


@login_required
@require_GET
def search_conversations(request: HttpRequest) -> HttpResponse:
    """Search titles and messages (`?q=`): the results alone for htmx, a whole page otherwise."""
    results = search.search(request.user.pk, request.GET.get("q", ""), request.GET.get("page"))
    context = {"results": results, "compact": request.htmx and request.GET.get("in") == "sidebar"}
    if request.htmx:
        return render(request, "conversations/search.html#search-results", context)
    return render(request, "conversations/search.html", context)
