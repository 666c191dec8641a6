"""Chat websockets across real daphne processes sharing PostgreSQL and Redis: a sign-in ended
through one process closes the sockets another holds, and the per-user cap counts the sockets
of every process, the places of a killed one freeing themselves."""

import asyncio

import pytest
import websockets

from conversations.models import Conversation
from conversations.replies import events
from tests.support.live import ChatClient, Daphne, session_key
from tests.support.scaleout import shared_services

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True), shared_services]


async def close_code(socket, timeout: float = 10) -> int:
    """Read what the page is sent until the server closes the socket; the close code."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await socket.recv()
    return closed.value.rcvd.code


async def stays_open(socket) -> bool:
    """Whether the socket is still open once the server has had its say (a page past the cap
    is sent its notice, then closed, at once)."""
    try:
        await asyncio.wait_for(socket.recv(), 0.5)
    except TimeoutError:
        return True
    except websockets.ConnectionClosed:
        return False
    return await stays_open(socket)


def test_a_logout_through_one_process_closes_the_socket_another_holds(alice):
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    with Daphne("signed-in-a") as a, Daphne("signed-in-b") as b:

        async def log_out_through_b() -> int:
            async with ChatClient(a, key).websocket(conversation.pk) as page:
                await asyncio.to_thread(ChatClient(b, key).post, "/accounts/logout/")
                return await close_code(page)

        assert asyncio.run(log_out_through_b()) == events.CLOSED_SIGNED_OUT


def test_the_cap_counts_every_process_and_a_killed_ones_places_free_themselves(alice):
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    # Two sockets at most; a place not renewed expires after three checks (1.5 s).
    env = {"CHAT_MAX_SOCKETS_PER_USER": "2", "CHAT_SOCKET_RECHECK_SECONDS": "0.5"}
    with Daphne("capped-a", **env) as a, Daphne("capped-b", **env) as b:
        via_a, via_b = ChatClient(a, key), ChatClient(b, key)

        async def scenario() -> tuple[int, bool]:
            on_a = await via_a.websocket(conversation.pk)
            async with via_b.websocket(conversation.pk) as on_b:
                assert await stays_open(on_a) and await stays_open(on_b)
                async with via_b.websocket(conversation.pk) as one_too_many:
                    refused_with = await close_code(one_too_many)
                a.kill()  # its socket's place is never given back
                on_a.transport.abort()
                async with asyncio.timeout(20):
                    while True:
                        async with via_b.websocket(conversation.pk) as later:
                            if await stays_open(later):
                                return refused_with, True
                        await asyncio.sleep(0.2)

        refused_with, accepted_later = asyncio.run(scenario())
        assert refused_with == events.CLOSED_TOO_MANY_SOCKETS
        assert accepted_later
