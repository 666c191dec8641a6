"""A chat websocket lives only as long as the sign-in it was opened with: a logout closes the
sockets of that session, a password change or a deactivation those of every session, at once;
whatever no signal tells (a session expired or deleted) closes them at the next check."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core import mail
from django.test import AsyncClient
from django.urls import reverse

from accounts.models import User
from conversations.models import Conversation
from conversations.replies import events
from tests.support.sockets import home_page_socket
from tests.support.visitors import PASSWORD

# A handshake reads the session and claims a place in worker threads: on a busy machine that
# takes more than the test communicator's default second.
HANDSHAKE_SECONDS = 10

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "a different passphrase for 2026"


async def signed_in(user: User) -> AsyncClient:
    """A browser of its own (a laptop, a phone): a session of its own."""
    client = AsyncClient()
    await client.aforce_login(user)
    return client


def session_key(client: AsyncClient) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def chat_socket(client: AsyncClient) -> WebsocketCommunicator | None:
    """The socket of a chat page in that browser, or None when it is refused."""
    communicator = home_page_socket(client)
    connected, _ = await communicator.connect(timeout=HANDSHAKE_SECONDS)
    return communicator if connected else None


async def close_code(socket: WebsocketCommunicator, timeout: float = 5) -> int:
    """Read what the page is sent until the server closes the socket; the close code."""
    async with asyncio.timeout(timeout):
        while (output := await socket.receive_output(timeout))["type"] != "websocket.close":
            pass
    await socket.disconnect()
    return output["code"]


async def still_hears_its_sidebar(
    socket: WebsocketCommunicator, client: AsyncClient, user: User
) -> bool:
    """Whether the page still gets the user's news: a conversation pinned in that browser."""
    conversation = await Conversation.objects.acreate(owner=user)
    await client.post(reverse("conversation_pin", args=[conversation.pk]))
    return 'id="conversation-list"' in await socket.receive_from(timeout=5)


async def test_logging_out_closes_the_sockets_of_that_session_only(alice):
    laptop, phone = await signed_in(alice), await signed_in(alice)
    laptop_page, phone_page = await chat_socket(laptop), await chat_socket(phone)

    await laptop.post(reverse("account_logout"))

    assert await close_code(laptop_page) == events.CLOSED_SIGNED_OUT
    assert await chat_socket(laptop) is None
    assert await still_hears_its_sidebar(phone_page, phone, alice)
    await phone_page.disconnect()


async def test_a_password_change_closes_every_socket_and_only_its_own_browser_reconnects(alice):
    laptop, phone = await signed_in(alice), await signed_in(alice)
    laptop_page, phone_page = await chat_socket(laptop), await chat_socket(phone)

    response = await laptop.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    assert await close_code(phone_page) == events.CLOSED_SIGNED_OUT
    assert await chat_socket(phone) is None
    # The laptop's page is closed too (its session got a new key), and opens again with the
    # cookie the change gave it, as the page does (static/js/chat.js).
    assert await close_code(laptop_page) == events.CLOSED_SIGNED_OUT
    reopened = await chat_socket(laptop)
    assert reopened is not None
    assert await still_hears_its_sidebar(reopened, laptop, alice)
    await reopened.disconnect()


async def test_a_password_reset_closes_every_socket(alice):
    phone = await signed_in(alice)
    phone_page = await chat_socket(phone)
    stranger = AsyncClient()  # a forgotten password, reset from another browser

    await stranger.post(reverse("account_reset_password"), {"email": alice.email})
    [message] = mail.outbox
    link = next(word for word in message.body.split() if "/password/reset/key/" in word)
    form = await stranger.get(link, follow=True)
    await stranger.post(
        form.redirect_chain[-1][0], {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )

    changed = await sync_to_async(
        lambda: User.objects.get(pk=alice.pk).check_password(NEW_PASSWORD)
    )()
    assert changed
    assert await close_code(phone_page) == events.CLOSED_SIGNED_OUT
    assert await chat_socket(phone) is None


async def deactivate(user: User) -> None:
    user.is_active = False
    await user.asave()


async def delete(user: User) -> None:
    await user.adelete()


@pytest.mark.parametrize("end_account", [deactivate, delete], ids=["deactivated", "deleted"])
async def test_an_account_deactivated_or_deleted_has_every_socket_closed(alice, bob, end_account):
    laptop, phone, bobs = await signed_in(alice), await signed_in(alice), await signed_in(bob)
    laptop_page, phone_page, bobs_page = [
        await chat_socket(client) for client in (laptop, phone, bobs)
    ]

    await end_account(alice)

    assert await close_code(laptop_page) == events.CLOSED_SIGNED_OUT
    assert await close_code(phone_page) == events.CLOSED_SIGNED_OUT
    assert await chat_socket(phone) is None
    assert await still_hears_its_sidebar(bobs_page, bobs, bob)
    await bobs_page.disconnect()


async def test_saving_the_user_otherwise_closes_nothing(alice):
    phone = await signed_in(alice)
    phone_page = await chat_socket(phone)

    alice.first_name = "Alice"
    await alice.asave()
    await signed_in(alice)  # another login: its last_login is saved

    assert await still_hears_its_sidebar(phone_page, phone, alice)
    await phone_page.disconnect()


@pytest.mark.parametrize(
    "end_quietly",
    [
        pytest.param(
            lambda user, key: Session.objects.filter(session_key=key).delete(), id="session-deleted"
        ),
        pytest.param(
            lambda user, key: User.objects.filter(pk=user.pk).update(password="!changed"),
            id="password-changed-by-a-bulk-update",
        ),
        pytest.param(
            lambda user, key: User.objects.filter(pk=user.pk).update(is_active=False),
            id="deactivated-by-a-bulk-update",
        ),
    ],
)
async def test_a_sign_in_ended_without_a_signal_closes_its_sockets_at_the_next_check(
    alice, settings, end_quietly
):
    settings.CHAT_SOCKET_RECHECK_SECONDS = 0.1
    phone = await signed_in(alice)
    phone_page = await chat_socket(phone)
    assert await phone_page.receive_nothing(timeout=0.3)  # checked, and still signed in

    await sync_to_async(end_quietly)(alice, session_key(phone))

    assert await close_code(phone_page) == events.CLOSED_SIGNED_OUT
