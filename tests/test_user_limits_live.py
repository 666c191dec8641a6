"""A user's limits hold under real concurrency: eight messages sent at once through the API,
half to each of two daphne processes, each to a conversation of its own.

- The daily quota: every admitted reply reserves its estimate in the transaction that stores
  it, under a lock on the user's row (PostgreSQL) or the database's write lock (SQLite), so the
  sends are admitted one after the other, each seeing what the earlier ones reserved. What the
  day costs stays within the quota plus the reservation of the reply admitted last.
- The replies at once: counted in the database in that same transaction, whichever process
  writes them.

Run on SQLite and on PostgreSQL (CI runs both).
"""

import asyncio

import httpx2
import pytest

from accounts.models import ApiToken, User
from conversations import usage
from conversations.models import Conversation, Message, UsageEntry
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import Daphne, server_env
from tests.support.usage import tokens_used_on

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

API_KEY = "sk-user-limits-tests"
SENDS = 8


async def send(server: Daphne, key: str, conversation: Conversation) -> httpx2.Response:
    """Send a message; for a reply admitted, wait for it to finish (JSON, not a stream)."""
    async with httpx2.AsyncClient(base_url=server.url, timeout=60) as http:
        return await http.post(
            f"/api/v1/conversations/{conversation.pk}/messages",
            json={"content": "How much is this one?"},
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
        )


def all_at_once(servers: list[Daphne], key: str, conversations: list[Conversation]) -> list:
    async def everyone() -> list[httpx2.Response]:
        sends = [
            send(servers[n % len(servers)], key, conversation)
            for n, conversation in enumerate(conversations)
        ]
        return await asyncio.gather(*sends)

    return asyncio.run(everyone())


@pytest.fixture
def alice_with_conversations(alice: User) -> tuple[str, list[Conversation]]:
    key = ApiToken.issue(alice, "burst")[1]
    conversations = [
        Conversation.objects.create(owner=alice, title=f"Burst {n}") for n in range(SENDS)
    ]
    return key, conversations


def test_eight_sends_at_once_overrun_the_quota_by_one_reservation_at_most(
    alice: User, alice_with_conversations
):
    key, conversations = alice_with_conversations
    daily_quota = 100
    with FakeOpenAI(api_key=API_KEY) as model:
        model.default = Reply(text="A short answer that costs a few tokens.")
        env = server_env(
            model, CHAT_DAILY_TOKEN_QUOTA=str(daily_quota), CHAT_MAX_REPLIES_PER_USER="0"
        )
        with Daphne("quota-a", **env) as a, Daphne("quota-b", **env) as b:
            responses = all_at_once([a, b], key, conversations)

    admitted = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) + len(refused) == SENDS, [r.text for r in responses]
    # The first reply admitted reserves more than the whole quota: no other may start.
    assert len(admitted) == 1
    for response in refused:
        assert response.json()["error"]["code"] == "quota_exceeded"
        assert int(response.headers["Retry-After"]) > 0
    entries = list(UsageEntry.objects.filter(user=alice))
    assert [entry.state for entry in entries] == [UsageEntry.State.SETTLED]
    [entry] = entries
    assert entry.total_tokens == admitted[0].json()["reply"]["usage"]["total_tokens"]
    spent = tokens_used_on(alice.pk, usage.today())
    reservation = entry.prompt_tokens + 1024  # CHAT_REPLY_RESERVE_TOKENS
    assert spent <= daily_quota + reservation
    # Nothing was stored for the refused sends: one question, one reply.
    assert Message.objects.filter(conversation__owner=alice).count() == 2


def test_eight_sends_at_once_start_no_more_replies_than_the_cap(
    alice: User, alice_with_conversations
):
    key, conversations = alice_with_conversations
    with FakeOpenAI(api_key=API_KEY) as model:
        # Each reply goes quiet for three seconds after its first word: all are streaming
        # together, then they finish by themselves.
        model.default = Reply(chunks=["One ", "moment."], stall_after=1, stall_seconds=3)
        env = server_env(model, CHAT_MAX_REPLIES_PER_USER="3")
        with Daphne("cap-a", **env) as a, Daphne("cap-b", **env) as b:
            responses = all_at_once([a, b], key, conversations)

    admitted = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(admitted), len(refused)) == (3, SENDS - 3), [r.text for r in responses]
    for response in admitted:
        assert response.json()["reply"]["content"] == "One moment."
    for response in refused:
        refusal = response.json()["error"]
        assert refusal["code"] == "too_many_replies"
        assert "You already have 3 replies being written" in refusal["message"]
        assert int(response.headers["Retry-After"]) > 0
    assert len(model.requests) == 3
    assert Message.objects.filter(conversation__owner=alice).count() == 2 * 3
