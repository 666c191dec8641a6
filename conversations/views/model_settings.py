"""Choosing a conversation's model, system prompt and temperature."""

import uuid

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from conversations import forms
from conversations.access import get_conversation_for_user
from conversations.llm import catalogue

SETTINGS_TEMPLATE = "conversations/settings.html"


@login_required
@require_POST
def conversation_settings(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """Save the settings; the next reply uses them. htmx gets the panel back, open."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    form = forms.form_for(conversation.metadata, request.POST)
    saved = form.is_valid()
    if saved:
        conversation.metadata.update(form.as_metadata())
        conversation.save(update_fields=["metadata"])
        if not request.htmx:
            return redirect(conversation)
    context = {
        "conversation": conversation,
        "settings_form": form,
        "saved": saved,
        "open": True,
        "chat_model": catalogue.for_conversation(conversation.metadata),
    }
    return render(request, f"{SETTINGS_TEMPLATE}#conversation-settings", context)


def settings_for_new_conversation(request: HttpRequest) -> tuple[dict, list[str]]:
    """The settings a conversation started by this request gets, and what is wrong with them:
    those chosen on the new-chat page, or the user's defaults when none were sent."""
    if "model" not in request.POST:
        return forms.defaults_for(request.user), []
    form = forms.form_for(forms.defaults_for(request.user), request.POST)
    if not form.is_valid():
        return {}, [
            f"{form[name].label}: {error}"
            for name, errors in form.errors.items()
            for error in errors
        ]
    return form.as_metadata(), []
