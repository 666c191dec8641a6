"""Password guessing: wrong passwords are counted per client, and per account *from that
client*, so a guesser locks out only themself, never the account's owner signing in from
elsewhere. The admin has no sign-in of its own: it is the site's, limits included.

Limits live in the cache: each test guesses from addresses and at accounts of its own
(tests/support/visitors.py).
"""

from urllib.parse import parse_qs, urlparse

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from accounts.models import User
from tests.support.visitors import PASSWORD, sign_in, some_address, some_email, visitor

pytestmark = pytest.mark.django_db

WRONG_PASSWORD = "The email address and/or password you specified are not correct."
TOO_MANY = "Too many failed login attempts. Try again later."


def rate_limit(scope: str) -> int:
    """How many failed sign-ins the settings allow per `scope` ("ip", or "key": an account
    from one client)."""
    for rate in settings.ACCOUNT_RATE_LIMITS["login_failed"].split(","):
        amount, _period, rate_scope = rate.split("/")
        if rate_scope == scope:
            return int(amount)
    raise AssertionError(f"no login_failed rate per {scope}")


def some_account(**extra) -> str:
    email = some_email("target")
    User.objects.create_user(email, PASSWORD, **extra)
    return email


def guess(client: Client, email: str, times: int) -> list[tuple[bool, str]]:
    return [sign_in(client, email, f"guess-{n}") for n in range(times)]


def test_guessing_locks_the_guessers_address_out_even_with_the_right_password() -> None:
    email = some_account()
    attacker = visitor()

    guesses = guess(attacker, email, rate_limit("key"))
    right_password = sign_in(attacker, email, PASSWORD)

    assert all(not signed_in and WRONG_PASSWORD in page for signed_in, page in guesses)
    assert right_password[0] is False
    assert TOO_MANY in right_password[1]


def test_guessing_from_elsewhere_does_not_lock_the_owner_out() -> None:
    """Five wrong passwords from anywhere used to lock the account for everyone, its owner
    included, for five minutes."""
    email = some_account()
    guess(visitor(), email, rate_limit("key") + 1)

    owner = sign_in(visitor(), email, PASSWORD)

    assert owner[0] is True


def test_one_address_may_not_spread_its_guesses_over_many_accounts() -> None:
    attacker = visitor()
    accounts = [some_account() for _ in range(rate_limit("ip") + 1)]

    sprayed = [sign_in(attacker, email, "Password1") for email in accounts[:-1]]
    right_password = sign_in(attacker, accounts[-1], PASSWORD)

    assert all(WRONG_PASSWORD in page for _, page in sprayed)
    assert right_password[0] is False
    assert TOO_MANY in right_password[1]


def test_without_a_proxy_a_forged_x_forwarded_for_changes_nothing() -> None:
    """With no proxy configured, X-Forwarded-For is whatever the client wrote: a guesser who
    changes it at every try is still counted at the one address it connects from."""
    email = some_account()
    address = some_address()

    for n in range(rate_limit("key")):
        sign_in(Client(REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=some_address()), email, f"g{n}")
    forged = Client(REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=some_address())
    right_password = sign_in(forged, email, PASSWORD)

    assert right_password[0] is False
    assert TOO_MANY in right_password[1]


def test_behind_the_proxy_each_client_is_counted_on_its_own(settings) -> None:
    """Production runs behind a proxy (BEHIND_TLS_PROXY=1 trusts the address it appends to
    X-Forwarded-For), so every request comes from the proxy's address: the client is the
    proxy's last entry, whatever the client put before it."""
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    email = some_account()
    attacker = Client(**proxy, HTTP_X_FORWARDED_FOR=f"203.0.113.9, {some_address()}")
    owner = Client(**proxy, HTTP_X_FORWARDED_FOR=some_address())

    guess(attacker, email, rate_limit("key"))
    attacker_with_right_password = sign_in(attacker, email, PASSWORD)
    owner_with_right_password = sign_in(owner, email, PASSWORD)

    assert attacker_with_right_password[0] is False
    assert TOO_MANY in attacker_with_right_password[1]
    assert owner_with_right_password[0] is True


# --------------------------------------------------------------------------- #
# The admin
# --------------------------------------------------------------------------- #


def test_the_admin_takes_no_password_of_its_own() -> None:
    """Its form had no limit: 30 wrong passwords, then the right one signed in."""
    email = some_account(is_staff=True, is_superuser=True)
    attacker = visitor()
    admin_login = reverse("admin:login")

    for n in range(30):
        attacker.post(admin_login, {"username": email, "password": f"guess-{n}"})
    right_password = attacker.post(admin_login, {"username": email, "password": PASSWORD})

    assert right_password.status_code == 302
    assert urlparse(right_password["Location"]).path == reverse("account_login")
    assert attacker.get(reverse("admin:index")).status_code == 302  # not signed in


def test_staff_sign_in_on_the_sites_page_and_land_in_the_admin() -> None:
    email = some_account(is_staff=True)
    staff = visitor()

    sent = staff.get(reverse("admin:index"), follow=True)
    signed_in = staff.post(
        sent.redirect_chain[-1][0], {"login": email, "password": PASSWORD}, follow=True
    )

    login_page = urlparse(sent.redirect_chain[-1][0])
    assert login_page.path == reverse("account_login")
    assert parse_qs(login_page.query)["next"] == [reverse("admin:index")]
    assert signed_in.redirect_chain[-1][0] == reverse("admin:index")
    assert signed_in.status_code == 200
    assert "Site administration" in signed_in.content.decode()


def test_a_user_who_is_not_staff_is_told_so_and_not_sent_round(bob_client) -> None:
    response = bob_client.get(reverse("admin:index"), follow=True)

    page = response.content.decode()
    assert response.status_code == 403
    assert len(response.redirect_chain) == 1  # the admin sends to its sign-in, which refuses
    assert "bob@example.com" in page and "is for staff accounts" in page
    assert f'action="{reverse("account_logout")}"' in page
