"""The OpenAI wire format (conversations/llm/wire.py) that the offline model and the tests' fake
OpenAI server both speak: its pieces, and the two servers streaming the same chunks."""

import json

import httpx2
import openai
import pytest

from conversations.llm.offline import OFFLINE_MODEL, OfflineTransport, offline_reply
from conversations.llm.wire import (
    SSE_DONE,
    completion_chunk,
    estimate_prompt_tokens,
    iter_stream_chunks,
    split_into_tokens,
    sse_event,
)
from tests.support.fake_openai import FakeOpenAI, Reply


@pytest.mark.parametrize(
    "text",
    ["Hello world", "", "   ", "  lead and trail  ", "a\n\nb\tc", "naïve café 🙂 ok", "x"],
)
def test_split_into_tokens_round_trips(text: str) -> None:
    tokens = split_into_tokens(text)
    assert "".join(tokens) == text
    assert all(tokens)


def test_split_into_tokens_keeps_leading_whitespace_like_a_tokenizer() -> None:
    assert split_into_tokens("Hello big world!") == ["Hello", " big", " world!"]


def test_sse_event_and_chunk_shape() -> None:
    chunk = completion_chunk(completion_id="c1", model="m", created=1, content="Hi")
    assert sse_event(chunk) == b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + (
        b"\n\n"
    )
    assert sse_event("[DONE]") == SSE_DONE
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"] == [
        {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
    ]


def test_iter_stream_chunks_sequence() -> None:
    chunks = list(iter_stream_chunks(["a", " b"], model="m", include_usage=True, prompt_tokens=3))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["a", " b"]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert len({c["id"] for c in chunks}) == 1


def test_estimate_prompt_tokens_handles_string_and_part_contents() -> None:
    messages = [
        {"role": "user", "content": "one two"},
        {"role": "user", "content": [{"type": "text", "text": "three four five"}]},
        {"role": "assistant", "content": None},
    ]
    assert estimate_prompt_tokens(messages) == 5
    assert estimate_prompt_tokens("not a list") == 0


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the whole world"},
]


async def streamed_chunks(client: openai.AsyncOpenAI) -> list[dict]:
    """The chunks of one streamed reply as the SDK parses them, without their id and time."""
    async with client:
        stream = await client.chat.completions.create(
            model=OFFLINE_MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        return [chunk.model_dump(exclude={"id", "created"}) async for chunk in stream]


@pytest.mark.asyncio
async def test_the_offline_model_streams_the_chunks_the_fake_server_streams() -> None:
    offline = openai.AsyncOpenAI(
        api_key="offline",
        base_url="http://offline.invalid/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=OfflineTransport()),
    )
    offline_chunks = await streamed_chunks(offline)
    async with FakeOpenAI(default=Reply(text=offline_reply(MESSAGES))) as server:
        fake = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        fake_chunks = await streamed_chunks(fake)

    assert offline_chunks == fake_chunks
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in offline_chunks[:-1])
    assert text == offline_reply(MESSAGES)
    assert offline_chunks[-1]["usage"]["prompt_tokens"] == estimate_prompt_tokens(MESSAGES)
