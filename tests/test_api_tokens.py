"""Personal API tokens: made on the account's tokens page, shown once, stored as a hash,
refused the moment they are revoked, and visible to operators by prefix only."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, User
from tests.support.xss import PAYLOADS, assert_inert


def api_get(key: str, path: str = "/api/v1/conversations"):
    return Client().get(path, headers={"Authorization": f"Bearer {key}"})


def shown_key(page: str) -> str:
    found = re.search(r'id="new-token-key"[^>]*value="([^"]+)"', page)
    assert found, "the new key is not on the page"
    return found[1]


@pytest.mark.django_db(transaction=True)
def test_a_token_made_on_the_page_is_shown_once_and_works_for_the_api(alice, alice_client):
    created = alice_client.post(reverse("api_tokens"), {"name": "Backup script"})
    key = shown_key(created.content.decode())
    later = alice_client.get(reverse("api_tokens")).content.decode()

    token = ApiToken.objects.get(user=alice)
    assert token.name == "Backup script"
    assert token.hashed_key == hashlib.sha256(key.encode()).hexdigest()
    assert token.prefix == key[:8]
    assert created.status_code == 200  # shown in the answer to the POST, not after a redirect
    assert "no-store" in created["Cache-Control"]
    assert key not in later  # shown once only
    assert f"{token.prefix}…" in later and "Backup script" in later
    assert api_get(key).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_new_key_never_reaches_the_session_store(alice, alice_client):
    """The key was kept in the session until its page was viewed: a copy of the session store
    (a backup, a shared Redis) held working keys. Now no session ever holds it."""
    alice_client.post(reverse("api_tokens"), {"name": "Backup script"})

    token = ApiToken.objects.get(user=alice)
    stored = [
        value for session in Session.objects.all() for value in session.get_decoded().values()
    ]
    assert stored, "the test client's session is in the store"
    assert not [value for value in stored if ApiToken.hash(str(value)) == token.hashed_key]


@pytest.mark.django_db
def test_the_page_swaps_in_the_new_key_and_the_list_without_reloading(alice, alice_client):
    created = alice_client.post(
        reverse("api_tokens"), {"name": "Laptop"}, headers={"HX-Request": "true"}
    )
    panel = created.content.decode()

    assert panel.lstrip().startswith('<div id="token-panel">')
    assert "<html" not in panel
    assert shown_key(panel) and "Laptop" in panel
    assert 'name="name"' in panel and 'value=""' in panel  # the form is ready for another


@pytest.mark.django_db(transaction=True)
def test_a_revoked_token_is_refused_at_once(alice, alice_client):
    token, key = ApiToken.issue(alice, "Laptop")
    assert api_get(key).status_code == 200

    revoked = alice_client.post(reverse("api_token_revoke", args=[token.pk]))
    refused = api_get(key)

    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.is_revoked
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Bearer"
    assert "Revoked" in alice_client.get(reverse("api_tokens")).content.decode()


@pytest.mark.django_db
def test_no_one_else_sees_or_revokes_a_token(alice, bob_client):
    token, _ = ApiToken.issue(alice, "Alice's laptop")

    page = bob_client.get(reverse("api_tokens")).content.decode()
    revoke = bob_client.post(reverse("api_token_revoke", args=[token.pk]))

    assert "Alice's laptop" not in page and token.prefix not in page
    assert revoke.status_code == 404
    token.refresh_from_db()
    assert not token.is_revoked


@pytest.mark.django_db
def test_the_tokens_page_is_for_signed_in_users(client):
    response = client.get(reverse("api_tokens"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


@pytest.mark.django_db
def test_a_token_needs_a_name(alice, alice_client):
    response = alice_client.post(reverse("api_tokens"), {"name": "  "})

    assert "Name the token after what will use it." in response.content.decode()
    assert not ApiToken.objects.filter(user=alice).exists()


@pytest.mark.django_db(transaction=True)
def test_a_deactivated_users_token_is_refused(alice):
    _, key = ApiToken.issue(alice, "Old script")
    User.objects.filter(pk=alice.pk).update(is_active=False)

    assert api_get(key).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_last_use_is_recorded_at_most_once_a_minute(alice):
    token, key = ApiToken.issue(alice, "Cron job")

    api_get(key)
    token.refresh_from_db()
    first_use = token.last_used_at
    api_get(key)
    token.refresh_from_db()
    unchanged = token.last_used_at
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    api_get(key)
    token.refresh_from_db()

    assert first_use is not None and timezone.now() - first_use < timedelta(minutes=1)
    assert unchanged == first_use
    assert token.last_used_at > first_use


@pytest.mark.django_db
def test_the_chat_page_links_to_the_tokens_page(alice_client):
    page = alice_client.get(reverse("home")).content.decode()

    assert f'href="{reverse("api_tokens")}"' in page


@pytest.mark.django_db
def test_the_admin_shows_tokens_by_prefix_and_never_their_hash(alice, admin_client):
    token, key = ApiToken.issue(alice, "Deploy bot")

    listing = admin_client.get(reverse("admin:accounts_apitoken_changelist")).content.decode()
    detail = admin_client.get(
        reverse("admin:accounts_apitoken_change", args=[token.pk])
    ).content.decode()

    assert "Deploy bot" in listing and token.prefix in listing
    for page in (listing, detail):
        assert token.hashed_key not in page
        assert key not in page


@pytest.mark.live
@pytest.mark.django_db
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_hostile_token_names_stay_text(payload, alice, alice_client):
    ApiToken.issue(alice, payload[:100])

    page = assert_inert(alice_client.get(reverse("api_tokens")).content.decode())

    [row] = page.by_id("token-list").all("tr")[1:]
    assert row.all("td")[0].text() == payload[:100]
