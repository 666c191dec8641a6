"""Failures of the model provider: each becomes a clear message, never a broken conversation."""

import asyncio
import socket

import pytest
from django.urls import reverse

from conversations.llm import client
from conversations.llm.wire import estimate_prompt_tokens, usage_dict
from conversations.models import Message
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply

QUESTION = [{"role": "user", "content": "Where should I go in May?"}]
CHUNKS = ["Lisbon", " is", " lovely", " in", " May."]
HTMX = {"HX-Request": "true"}


async def collect(model: str = "gpt-4o-mini") -> tuple[str, client.ReplyEnd | None]:
    """Everything stream_reply yields: the text, and its end record."""
    text, end = "", None
    async for item in client.stream_reply(QUESTION, model=model):
        if isinstance(item, client.ReplyEnd):
            end = item
        else:
            text += item
    return text, end


async def collect_until_failure() -> tuple[str, client.ProviderError]:
    """The text stream_reply yielded before it raised, and what it raised."""
    text = ""
    with pytest.raises(client.ProviderError) as raised:
        async for item in client.stream_reply(QUESTION, model="gpt-4o-mini"):
            assert isinstance(item, str), "a failed reply must not end with a ReplyEnd"
            text += item
    return text, raised.value


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Each failure: what the fake server does, the error kind, words the user must see, and the
# text that arrived before the failure.
FAILURES = [
    pytest.param(Reply(status=401), "auth", ["API key", "401"], "", id="bad-key"),
    pytest.param(
        Reply(status=429, retry_after=7), "rate_limit", ["rate limiting", "7 s"], "", id="429"
    ),
    pytest.param(Reply(status=500), "server", ["internal error", "500"], "", id="500"),
    pytest.param(Reply(status=404), "not_found", ["model name"], "", id="unknown-model"),
    pytest.param(
        Reply(chunks=CHUNKS, stall_after=2, stall_seconds=5),
        "timeout",
        ["in time"],
        "Lisbon is",
        id="stall-mid-stream",
    ),
    pytest.param(
        Reply(chunks=CHUNKS, drop_after=2), "stream", ["broke off"], "Lisbon is", id="cut"
    ),
    pytest.param(
        Reply(chunks=CHUNKS, drop_after=2, drop_with_reset=True),
        "stream",
        ["broke off"],
        "Lisbon is",
        id="reset",
    ),
    pytest.param(
        Reply(chunks=CHUNKS, malformed_after=2),
        "stream",
        ["broke off"],
        "Lisbon is",
        id="malformed-sse",
    ),
    pytest.param(
        Reply(chunks=CHUNKS, finish_reason=""),
        "stream",
        ["ended unexpectedly"],
        "".join(CHUNKS),
        id="no-finish-reason",
    ),
    pytest.param(
        Reply(chunks=CHUNKS, error_after=2),
        "stream",
        ["reported an error mid-reply", "The server had an error"],
        "Lisbon is",
        id="error-event-mid-stream",
    ),
]
THROUGH_THE_WHOLE_PATH = {"bad-key", "429", "500", "stall-mid-stream", "cut", "malformed-sse"}


@pytest.fixture
def short_timeout(fake_openai, settings) -> None:
    settings.OPENAI_TIMEOUT = 0.5


@pytest.mark.asyncio
class TestStreamReply:
    async def test_it_streams_the_text_then_reports_model_and_usage(self, fake_openai):
        fake_openai.script(Reply(chunks=CHUNKS, model="gpt-4o-mini-2024-07-18"))

        text, end = await collect(model="gpt-4o-mini")

        [request] = fake_openai.requests
        assert text == "".join(CHUNKS)
        assert end == client.ReplyEnd(
            model="gpt-4o-mini-2024-07-18",
            finish_reason="stop",
            usage=usage_dict(estimate_prompt_tokens(QUESTION), len(CHUNKS)),
        )
        assert request["messages"] == QUESTION
        assert request["model"] == "gpt-4o-mini"
        assert request["stream"] is True
        assert request["stream_options"] == {"include_usage": True}
        assert fake_openai.request_headers[0]["authorization"] == "Bearer sk-test"

    async def test_a_reply_cut_short_by_length_still_ends_normally(self, fake_openai):
        fake_openai.script(Reply(chunks=CHUNKS, finish_reason="length"))

        text, end = await collect()

        assert text == "".join(CHUNKS)
        assert end.finish_reason == "length"

    @pytest.mark.usefixtures("short_timeout")
    @pytest.mark.parametrize(("reply", "kind", "words", "partial"), FAILURES)
    async def test_a_failure_raises_a_message_for_the_user(
        self, fake_openai, reply, kind, words, partial
    ):
        fake_openai.script(reply)

        text, error = await collect_until_failure()

        assert error.kind == kind
        for word in words:
            assert word in error.user_message
        assert text == partial

    async def test_a_rate_limit_without_retry_after_says_try_again_soon(self, fake_openai):
        fake_openai.script(Reply(status=429))

        _, error = await collect_until_failure()

        assert error.kind == "rate_limit"
        assert "Try again in a moment." in error.user_message

    async def test_a_provider_that_never_starts_answering_times_out(
        self, fake_openai, short_timeout
    ):
        fake_openai.script(Reply(first_byte_delay=5))

        text, error = await collect_until_failure()

        assert error.kind == "timeout"
        assert text == ""

    async def test_an_unreachable_provider_says_so(self, settings):
        settings.OPENAI_BASE_URL = f"http://127.0.0.1:{closed_port()}/v1"
        settings.OPENAI_MAX_RETRIES = 0

        text, error = await collect_until_failure()

        assert error.kind == "connection"
        assert "OPENAI_BASE_URL" in error.user_message
        assert text == ""

    async def test_a_new_key_in_settings_takes_effect(self, fake_openai, settings):
        await collect()
        settings.OPENAI_API_KEY = "sk-rotated"

        await collect()

        assert [h["authorization"] for h in fake_openai.request_headers] == [
            "Bearer sk-test",
            "Bearer sk-rotated",
        ]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestFailedReplies:
    """Through the whole path: POST, generation task, database, the page."""

    async def send(self, client, conversation, text: str) -> Message:
        response = await client.post(
            reverse("message_send", args=[conversation.pk]), {"text": text}, headers=HTMX
        )
        assert response.status_code == 200
        reply = await conversation.messages.filter(role="assistant").alatest("created_at")
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        return reply

    async def assert_usable_again(self, client, conversation, fake_openai) -> None:
        fake_openai.script(Reply(text="Sorry about that. Lisbon!"))

        reply = await self.send(client, conversation, "Let's try again")

        assert reply.status == Message.Status.COMPLETE
        assert reply.content == "Sorry about that. Lisbon!"

    @pytest.mark.usefixtures("short_timeout")
    @pytest.mark.parametrize(
        ("reply", "kind", "words", "partial"),
        [p for p in FAILURES if p.id in THROUGH_THE_WHOLE_PATH],
    )
    async def test_a_failed_reply_keeps_the_question_and_the_text_so_far(
        self, alice_async_client, conversation, fake_openai, reply, kind, words, partial
    ):
        fake_openai.script(reply)

        failed = await self.send(alice_async_client, conversation, "Tell me about Lisbon")

        assert failed.status == Message.Status.ERROR
        assert failed.content == partial
        assert failed.metadata["error_kind"] == kind
        for word in words:
            assert word in failed.error_text
        assert await conversation.messages.filter(content="Tell me about Lisbon").aexists()
        page = (await alice_async_client.get(conversation.get_absolute_url())).content.decode()
        assert failed.error_text in page
        await self.assert_usable_again(alice_async_client, conversation, fake_openai)
        assert {"role": "user", "content": "Tell me about Lisbon"} in fake_openai.requests[-1][
            "messages"
        ]

    async def test_an_unreachable_provider_fails_the_reply_not_the_conversation(
        self, alice_async_client, conversation, fake_openai, settings
    ):
        settings.OPENAI_BASE_URL = f"http://127.0.0.1:{closed_port()}/v1"

        failed = await self.send(alice_async_client, conversation, "Tell me about Lisbon")

        assert failed.status == Message.Status.ERROR
        assert failed.metadata["error_kind"] == "connection"
        assert failed.content == ""
        settings.OPENAI_BASE_URL = fake_openai.base_url
        await self.assert_usable_again(alice_async_client, conversation, fake_openai)

    async def test_an_unexpected_bug_is_reported_as_a_server_problem(
        self, alice_async_client, conversation, monkeypatch
    ):
        async def broken_stream(messages, *, model, **options):
            yield "Lisbon"
            raise RuntimeError("a bug")

        monkeypatch.setattr(client, "stream_reply", broken_stream)

        failed = await self.send(alice_async_client, conversation, "Tell me about Lisbon")

        assert failed.status == Message.Status.ERROR
        assert failed.metadata["error_kind"] == "internal"
        assert failed.content == "Lisbon"
        assert "went wrong on the server" in failed.error_text


@pytest.mark.live
@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [1, 2])
async def test_a_process_opens_at_most_openai_max_connections_at_once(limit, fake_openai, settings):
    settings.OPENAI_MAX_CONNECTIONS = limit
    fake_openai.script(
        Reply(chunks=["first", " reply"], stall_after=1, stall_seconds=1.0),
        Reply(text="second reply"),
    )
    first_stream = client.stream_reply(QUESTION, model="gpt-4o-mini")
    assert await anext(first_stream) == "first"  # the first reply now holds a connection

    second = asyncio.create_task(collect())
    # While the first reply is stalled, the second is sent only if the limit leaves room.
    await asyncio.sleep(0.5)
    requests_during_the_stall = len(fake_openai.requests)
    rest_of_first = "".join([item async for item in first_stream if isinstance(item, str)])
    second_text, _ = await second

    assert requests_during_the_stall == limit
    assert rest_of_first == " reply"
    assert second_text == "second reply"
