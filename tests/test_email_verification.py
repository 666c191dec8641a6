"""Email addresses belong to whoever reads their mail: an address added to an account counts
only once the link mailed to it is followed, and with mandatory verification (the production
setting) signing up does not tell whether an address already has an account."""

import importlib
import re
from unittest import mock
from urllib.parse import urlparse

import pytest
from allauth.account.models import EmailAddress
from django.apps import apps
from django.contrib.auth.hashers import get_hasher
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from accounts.models import User
from tests.support.visitors import PASSWORD, sign_in, some_email, visitor

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "another horse battery staple"


def add_address(client: Client, email: str):
    return client.post(reverse("account_email"), {"email": email, "action_add": ""})


def signs_in(email: str, password: str) -> bool:
    return sign_in(visitor(), email, password)[0]


def sign_up(client: Client, email: str):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )


@pytest.fixture(autouse=True)
def no_mail_limits_left_from_earlier_tests() -> None:
    """Links mailed per account are counted by account id, which the test database reuses."""
    cache.clear()


def mailed_links(email: str) -> list[str]:
    """The paths of the links in the mails sent to `email`."""
    return [
        urlparse(re.search(r"https?://\S+", message.body)[0]).path
        for message in mail.outbox
        if message.to == [email]
    ]


def mailed_link(email: str) -> str:
    """The path of the link in the one mail sent to `email`."""
    [link] = mailed_links(email)
    return link


def said(client: Client, response) -> list[str]:
    """The messages shown on the page a response redirects to."""
    page = client.get(response["Location"])
    return [str(message) for message in page.context["messages"]]


def test_someone_elses_address_added_to_an_account_signs_no_one_in(bob, bob_client):
    """Bob added an address that is not his and signed in with it and his own password."""
    owners_address = some_email("owner")

    add_address(bob_client, owners_address)

    assert not signs_in(owners_address, PASSWORD)
    assert not EmailAddress.objects.filter(email=owners_address).exists()
    assert mailed_link(owners_address)  # to the address, where Bob cannot read it


def test_the_owner_of_an_address_someone_added_can_still_sign_up_with_it(bob, bob_client):
    owners_address = some_email("owner")
    add_address(bob_client, owners_address)

    signed_up = sign_up(visitor(), owners_address)

    assert signed_up.status_code == 302, signed_up.content.decode()
    assert User.objects.get(email=owners_address) != bob
    assert signs_in(owners_address, NEW_PASSWORD)
    assert not signs_in(owners_address, PASSWORD)


def test_an_added_address_signs_in_once_the_link_mailed_to_it_is_followed(alice, alice_client):
    work = some_email("alice-work")

    add_address(alice_client, work)
    before = signs_in(work, PASSWORD)
    asked = alice_client.get(mailed_link(work))
    added_by_asking = EmailAddress.objects.filter(email=work).exists()
    added = alice_client.post(mailed_link(work))

    assert not before
    assert f"Add {work}" in asked.content.decode()
    assert not added_by_asking  # mail scanners follow links
    assert added["Location"] == reverse("account_email")
    assert EmailAddress.objects.get(email=work).user == alice
    assert EmailAddress.objects.get(email=work).verified
    assert signs_in(work, PASSWORD)


def test_the_link_adds_the_address_to_no_other_account(bob_client, alice_client):
    """The owner of the address, signed in to their own account, follows the link Bob asked
    for: nothing is added to either account."""
    owners_address = some_email("owner")
    add_address(bob_client, owners_address)

    followed = alice_client.post(mailed_link(owners_address))
    forged = bob_client.post(mailed_link(owners_address).replace(":", "x:", 1))

    assert followed.status_code == forged.status_code == 400
    assert "This link is not valid" in followed.content.decode()
    assert not EmailAddress.objects.filter(email=owners_address).exists()


def test_addresses_added_unconfirmed_before_the_links_are_forgotten(alice, bob):
    claimed = EmailAddress.objects.create(user=bob, email=some_email("owner"))  # the old way
    own = EmailAddress.objects.create(user=alice, email=alice.email)  # never confirmed
    confirmed = EmailAddress.objects.create(user=bob, email=some_email("bob"), verified=True)
    migration = importlib.import_module(
        "accounts.migrations.0005_forget_unverified_added_addresses"
    )

    signed_in_before = signs_in(claimed.email, PASSWORD)  # as Bob
    migration.forget_unverified_added_addresses(apps, schema_editor=None)

    assert signed_in_before
    assert not signs_in(claimed.email, PASSWORD)
    assert set(EmailAddress.objects.all()) == {own, confirmed}
    assert signs_in(alice.email, PASSWORD)


def test_with_mandatory_verification_signup_does_not_say_which_addresses_exist(settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    member = User.objects.create_user(some_email("member"), PASSWORD)
    EmailAddress.objects.create(user=member, email=member.email, primary=True, verified=True)

    taken = sign_up(visitor(), member.email)
    free = sign_up(visitor(), some_email("newcomer"))

    assert taken.status_code == free.status_code == 302
    assert taken["Location"] == free["Location"] == reverse("account_email_verification_sent")
    assert User.objects.filter(email=member.email).get() == member
    assert signs_in(member.email, PASSWORD) and not signs_in(member.email, NEW_PASSWORD)
    # Only a mail says so: to the address, whose owner knows already.
    [to_member] = [message for message in mail.outbox if message.to == [member.email]]
    assert "already" in to_member.subject + to_member.body


def test_with_mandatory_verification_a_new_account_waits_for_its_address(settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    newcomer, address = visitor(), some_email("newcomer")

    sign_up(newcomer, address)
    waiting = newcomer.get(reverse("home"))
    newcomer.post(mailed_link(address))

    assert waiting.status_code == 302
    assert EmailAddress.objects.get(email=address).verified
    assert signs_in(address, NEW_PASSWORD)


def test_an_address_someone_else_added_first_still_gets_its_owners_link(
    alice, bob_client, alice_client
):
    """Bob adding Alice's address first used to silence her own link for minutes."""
    work = some_email("alice-work")

    add_address(bob_client, work)
    asked = add_address(alice_client, work)
    [bobs_link, alices_link] = mailed_links(work)

    assert bobs_link != alices_link
    assert said(alice_client, asked) == [f"Confirmation email sent to {work}."]
    alice_client.post(alices_link)
    assert EmailAddress.objects.get(email=work).user == alice


def test_adding_the_same_address_again_within_minutes_mails_one_link(alice_client):
    """The link mailed first stays good for days."""
    work = some_email("alice-work")

    first = said(alice_client, add_address(alice_client, work))
    again = said(alice_client, add_address(alice_client, work))

    assert len(mailed_links(work)) == 1
    assert first == again == [f"Confirmation email sent to {work}."]


def test_an_account_mails_links_to_five_new_addresses_an_hour(alice_client):
    addresses = [some_email(f"alice-{n}") for n in range(6)]

    answers = [add_address(alice_client, address) for address in addresses]

    assert [len(mailed_links(address)) for address in addresses] == [1, 1, 1, 1, 1, 0]
    assert "Too many new addresses lately" in answers[-1].content.decode()


def test_with_mandatory_verification_signup_hashes_the_password_whether_or_not_the_address_is_taken(
    settings,
):
    """Hashing a password is slow on purpose: a taken address answered without it, ten times
    faster than a free one, told which addresses have accounts."""
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    member = User.objects.create_user(some_email("member"), PASSWORD)
    EmailAddress.objects.create(user=member, email=member.email, primary=True, verified=True)
    hasher = type(get_hasher())

    with mock.patch.object(hasher, "encode", autospec=True, side_effect=hasher.encode) as encode:
        sign_up(visitor(), member.email)
        hashed_for_taken = encode.call_count
        sign_up(visitor(), some_email("newcomer"))
        hashed_for_free = encode.call_count - hashed_for_taken

    assert hashed_for_taken == hashed_for_free == 1
    assert signs_in(member.email, PASSWORD) and not signs_in(member.email, NEW_PASSWORD)


def test_with_mandatory_verification_signing_up_again_with_a_taken_address_says_the_same(settings):
    """allauth mails the owner of a taken address once every few minutes, and said nothing when
    it did not; a free address is always told a mail was sent."""
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    member = User.objects.create_user(some_email("member"), PASSWORD)
    EmailAddress.objects.create(user=member, email=member.email, primary=True, verified=True)
    newcomer = some_email("newcomer")

    first, again, free = visitor(), visitor(), visitor()
    first_answer = sign_up(first, member.email)
    again_answer = sign_up(again, member.email)
    free_answer = sign_up(free, newcomer)

    assert first_answer["Location"] == again_answer["Location"] == free_answer["Location"]
    assert (
        said(first, first_answer)
        == said(again, again_answer)
        == [f"Confirmation email sent to {member.email}."]
    )
    assert said(free, free_answer) == [f"Confirmation email sent to {newcomer}."]
    assert len([message for message in mail.outbox if message.to == [member.email]]) == 1
