"""Each action is written once (conversations/actions/) and each body checked by one form
(conversations/forms.py): a page and the API given the same thing do the same, and refuse it
in the same words."""

import html
import json

import pytest
from django.urls import reverse

from conversations.models import TITLE_MAX_LENGTH

HTMX = {"HX-Request": "true"}


def rename(face: str, client, conversation, title: str):
    if face == "page":
        url = reverse("conversation_rename", args=[conversation.pk])
        return client.post(url, {"title": title, "in": "header"}, headers=HTMX)
    url = reverse("api_conversation", args=[conversation.pk])
    return client.patch(url, json.dumps({"title": title}), content_type="application/json")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("face", ["page", "api"])
def test_a_new_name_is_tidied_alike_by_the_page_and_the_api(face, alice_client, conversation):
    response = rename(face, alice_client, conversation, "  Lisbon \n in\tMay  ")

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "Lisbon in May"
    assert conversation.metadata["title_source"] == "user"  # the model will not rename it


@pytest.mark.django_db(transaction=True)
def test_an_overlong_name_is_refused_by_the_api_in_the_pages_words(alice_client, conversation):
    title = "x" * (TITLE_MAX_LENGTH + 1)

    page = rename("page", alice_client, conversation, title)
    api = rename("api", alice_client, conversation, title)

    reason = api.json()["error"]["message"]
    assert api.status_code == 400
    assert reason == (
        f"A name is at most {TITLE_MAX_LENGTH} characters long; this one has {len(title)}."
    )
    assert reason in html.unescape(page.content.decode())
    conversation.refresh_from_db()
    assert conversation.title == "Trip planning"


@pytest.mark.django_db(transaction=True)
def test_an_empty_message_is_refused_by_the_api_in_the_pages_words(alice_client, conversation):
    page = alice_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "  "}, headers=HTMX
    )
    api = alice_client.post(
        reverse("api_messages", args=[conversation.pk]),
        json.dumps({"content": "  "}),
        content_type="application/json",
    )

    reason = api.json()["error"]["message"]
    assert api.status_code == 400
    assert reason == "Write a message first."
    assert reason in page.content.decode()
    assert conversation.messages.count() == 2
