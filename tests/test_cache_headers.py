"""What caches may keep: nothing of a signed-in user's pages, API answers or exports; a static
file for good; a share page nowhere, since its owner can revoke it."""

import uuid

import pytest
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse

from accounts.models import ApiToken
from conversations.models import ShareLink
from tests.support.visitors import PASSWORD


def directives(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",") if part}


PRIVATE = {"private", "no-store"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "route",
    [
        "conversation",
        "conversation_export_markdown",
        "conversation_export_json",
        "export_all",
        "usage",
        "search",
        "api_conversations",
        "api_conversation",
    ],
)
def test_a_signed_in_users_answers_are_kept_by_no_cache(route, conversation, alice_client):
    takes_id = route not in {"export_all", "usage", "search", "api_conversations"}
    url = reverse(route, args=[conversation.pk] if takes_id else [])

    response = alice_client.get(url, {"q": "Lisbon"} if route == "search" else {})

    assert response.status_code == 200
    assert PRIVATE <= directives(response)


@pytest.mark.django_db(transaction=True)
def test_api_answers_to_a_token_are_kept_by_no_cache(alice, conversation):
    script = Client(headers={"Authorization": f"Bearer {ApiToken.issue(alice, 'tests')[1]}"})

    listed = script.get(reverse("api_conversations"))
    refused = script.get(reverse("api_conversation", args=[uuid.uuid4()]))

    assert listed.status_code == 200
    assert PRIVATE <= directives(listed)
    assert refused.status_code == 404
    assert PRIVATE <= directives(refused)


@pytest.mark.django_db
def test_the_answer_that_signs_a_user_in_is_kept_by_no_cache(alice, client):
    response = client.post(reverse("account_login"), {"login": alice.email, "password": PASSWORD})

    assert response.status_code == 302
    assert PRIVATE <= directives(response)


@pytest.mark.django_db
def test_a_share_page_is_kept_by_no_cache_even_for_a_visitor_signed_out(client, conversation):
    share = ShareLink.snapshot_of(conversation)

    response = client.get(share.get_absolute_url())

    assert response.status_code == 200
    assert PRIVATE <= directives(response)


@pytest.mark.django_db
def test_static_files_keep_their_long_lived_caching_for_a_signed_in_user(alice_client):
    stylesheet = alice_client.get(static("css/app.css"))

    assert stylesheet.status_code == 200
    assert "immutable" in directives(stylesheet)
    assert not PRIVATE & directives(stylesheet)
