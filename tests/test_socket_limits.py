"""A user holds at most CHAT_MAX_SOCKETS_PER_USER chat websockets open at once: one more is
told why and closed with a code the page does not reconnect after. The places of a process
killed with sockets open free themselves; a live socket keeps its own."""

import asyncio
from collections.abc import Iterator

import pytest
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.test import AsyncClient

from accounts.models import User
from conversations.replies import events
from conversations.sockets.slots import SocketSlot
from tests.support.sockets import home_page_socket

# A handshake reads the session and claims a place in worker threads: on a busy machine that
# takes more than the test communicator's default second.
HANDSHAKE_SECONDS = 10

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def no_slots_left_over() -> Iterator[None]:
    """Slots of sockets that never closed (a dead process, played here) expire, but not at once."""
    yield
    cache.clear()


async def signed_in(user: User) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def open_pages(client: AsyncClient, count: int) -> list[WebsocketCommunicator]:
    pages = [home_page_socket(client) for _ in range(count)]
    for page in pages:
        connected, _ = await page.connect(timeout=HANDSHAKE_SECONDS)
        assert connected
    return pages


async def refusal(page: WebsocketCommunicator) -> tuple[str, int]:
    """What a page past the cap is sent before its socket closes, and the close code."""
    connected, _ = await page.connect(timeout=HANDSHAKE_SECONDS)
    assert connected  # accepted only to say why: a refused handshake is retried forever
    notice = await page.receive_from()
    closed = await page.receive_output()
    await page.disconnect()
    return notice, closed["code"]


async def test_a_socket_past_the_cap_is_told_why_until_another_closes(alice, bob, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 3
    alices = await signed_in(alice)
    pages = await open_pages(alices, 3)

    notice, code = await refusal(home_page_socket(alices))

    assert code == events.CLOSED_TOO_MANY_SOCKETS
    assert 'id="composer-errors"' in notice and 'hx-swap-oob="true"' in notice
    assert "Too many chat pages are open" in notice
    # The cap is per user, and a page closed frees its place.
    [bobs] = await open_pages(await signed_in(bob), 1)
    await pages.pop().disconnect()
    pages += await open_pages(alices, 1)
    for page in [*pages, bobs]:
        await page.disconnect()


@pytest.mark.live
async def test_a_live_socket_keeps_its_place_past_the_expiry(alice, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 1
    settings.CHAT_SOCKET_RECHECK_SECONDS = 0.1  # places expire after a second unless renewed
    alices = await signed_in(alice)
    [page] = await open_pages(alices, 1)

    assert await page.receive_nothing(timeout=1.5)

    _, code = await refusal(home_page_socket(alices))
    assert code == events.CLOSED_TOO_MANY_SOCKETS
    await page.disconnect()


async def test_the_places_of_a_dead_process_free_themselves(alice, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 2
    settings.CHAT_SOCKET_RECHECK_SECONDS = 0.1
    # Two sockets of a process killed since: their places were taken and are never renewed.
    assert await SocketSlot.take(alice.pk) and await SocketSlot.take(alice.pk)
    alices = await signed_in(alice)
    _, code = await refusal(home_page_socket(alices))
    assert code == events.CLOSED_TOO_MANY_SOCKETS

    async with asyncio.timeout(10):
        while True:
            page = home_page_socket(alices)
            connected, _ = await page.connect(timeout=HANDSHAKE_SECONDS)
            if connected and await page.receive_nothing(timeout=0.1):
                break
            await page.disconnect()
            await asyncio.sleep(0.2)
    await page.disconnect()


async def test_no_cap_when_set_to_zero(alice, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 0

    pages = await open_pages(await signed_in(alice), 40)

    for page in pages:
        await page.disconnect()
