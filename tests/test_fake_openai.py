"""Tests for ``tests.support.fake_openai``, driven by the real ``openai`` SDK over real HTTP.

What the SDK (openai 3.57.0 on httpx2 2.16.2) raises for each fault, as pinned by
the tests below. Map errors in this order: ``APITimeoutError`` is a subclass of
``APIConnectionError``, and every status error is an ``APIStatusError`` which is
an ``APIError``.

* HTTP status before the stream starts (raised by ``create()``, not by iteration):
  401 -> ``AuthenticationError``; 429 -> ``RateLimitError`` (``.response.headers``
  carries ``retry-after``); 500 and 503 -> ``InternalServerError``. All are
  ``APIStatusError`` with ``.status_code`` and ``.body`` = the ``error`` object.
* Connection cut mid-stream (raised by iteration, after the chunks that did arrive
  were yielded): ``APIConnectionError``. Its ``__cause__`` is
  ``httpx2.RemoteProtocolError`` ("incomplete chunked read") for a FIN, or
  ``httpx2.ReadError`` (from ``ConnectionResetError``) for an RST.
  Non-streaming, a cut before any response is ``APIConnectionError`` caused by
  ``httpx2.RemoteProtocolError`` ("Server disconnected without sending a response").
* Stall with a short client timeout: ``APITimeoutError`` (cause
  ``httpx2.ReadTimeout``), raised by iteration when the stall happens mid-stream
  and by ``create()`` when no headers arrived yet. The timeout is per read, so
  slow but steady streams never trip it; the SDK default is 600 s.
* Malformed SSE (a ``data:`` line that is not JSON): a bare
  ``json.JSONDecodeError`` escapes iteration. It is NOT an ``openai.OpenAIError``;
  catch it explicitly. (A non-JSON 200 body, non-streaming, also raises a bare
  ``json.JSONDecodeError``.)
* ``data: {"error": {...}}`` mid-stream: plain ``openai.APIError`` (not a status
  error; ``.body`` is the error object, ``.message`` its message).
* Connection refused: ``APIConnectionError`` caused by ``httpx2.ConnectError``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from conversations.llm.wire import split_into_tokens
from tests.support.fake_openai import FakeOpenAI, Reply

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the whole world"},
]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def async_client(server: FakeOpenAI, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0, **kwargs)


async def stream_chat(client: openai.AsyncOpenAI, **kwargs: Any) -> openai.AsyncStream[Any]:
    return await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )


async def collect_text(stream: openai.AsyncStream[Any], into: list[str]) -> None:
    """Append content pieces to ``into`` as they arrive, so a test can see what
    was received before an exception."""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- #
# Happy paths through the SDK
# --------------------------------------------------------------------------- #


@pytest.mark.asyncio
async def test_stream_reassembles_text_reports_usage_and_records_request(
    server: FakeOpenAI,
) -> None:
    text = "Hello, wonderful world!\n\nSecond line."
    server.script(Reply(text=text))
    async with async_client(server) as client:
        stream = await stream_chat(client)
        chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 9  # words in MESSAGES
    assert chunks[-1].usage.completion_tokens == len(split_into_tokens(text))
    assert chunks[-1].usage.total_tokens == 9 + len(split_into_tokens(text))
    assert {c.model for c in chunks} == {"gpt-test"}  # echoes the request's model

    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["messages"] == MESSAGES
    assert request["stream"] is True
    assert request["model"] == "gpt-test"
    assert server.request_headers[0]["authorization"] == "Bearer test"


@pytest.mark.asyncio
async def test_explicit_chunks_are_sent_verbatim_and_usage_can_be_omitted(
    server: FakeOpenAI,
) -> None:
    server.script(Reply(chunks=["Hel", "lo", "", " there"], usage=False, model="other-model"))
    async with async_client(server) as client:
        stream = await stream_chat(client)
        chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert pieces == ["Hel", "lo", "", " there"]
    assert all(c.usage is None for c in chunks)
    assert {c.model for c in chunks} == {"other-model"}


@pytest.mark.asyncio
async def test_non_streaming_completion(server: FakeOpenAI) -> None:
    server.script(Reply(text="Plain answer."))
    async with async_client(server) as client:
        completion = await client.chat.completions.create(model="m1", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Plain answer."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "m1"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2


@pytest.mark.asyncio
async def test_models_endpoint(server: FakeOpenAI) -> None:
    async with async_client(server) as client:
        models = [model.id async for model in client.models.list()]
    assert "gpt-4o-mini" in models


@pytest.mark.asyncio
async def test_script_is_consumed_in_order_then_default_answers(server: FakeOpenAI) -> None:
    server.default = Reply(text="default")
    server.script(Reply(text="first"), Reply(text="second"))
    assert server.pending_replies == 2
    texts = []
    async with async_client(server) as client:
        for _ in range(3):
            received: list[str] = []
            await collect_text(await stream_chat(client), received)
            texts.append("".join(received))
    assert texts == ["first", "second", "default"]
    assert server.pending_replies == 0


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection(server: FakeOpenAI) -> None:
    async with async_client(server) as client:
        for _ in range(3):
            await collect_text(await stream_chat(client), [])
        await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        await client.models.list()
    assert len(server.requests) == 4
    assert server.connections_accepted == 1


def test_raw_wire_format_uses_chunked_sse_ending_in_done(server: FakeOpenAI) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx2.Client() as http:
        response = http.post(f"{server.base_url}/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = response.content.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert all(event.startswith(b"data: ") for event in events[:-1])
    # Without stream_options.include_usage there is no usage chunk and no usage key.
    last = json.loads(events[-3].removeprefix(b"data: "))
    assert last["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in last


def test_sync_client_works_too(server: FakeOpenAI) -> None:
    server.script(Reply(text="sync ok"))
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "sync ok"


@pytest.mark.asyncio
async def test_async_context_manager() -> None:
    async with FakeOpenAI() as fake, async_client(fake) as client:
        received: list[str] = []
        await collect_text(await stream_chat(client), received)
    assert "".join(received) == Reply().text


@pytest.mark.asyncio
async def test_delay_spaces_chunks_in_time(server: FakeOpenAI) -> None:
    delay = 0.05
    server.script(Reply(chunks=["a", "b", "c", "d"], delay=delay))
    arrivals: list[float] = []
    async with async_client(server) as client:
        async for chunk in await stream_chat(client):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= delay * 0.8 for gap in gaps), gaps


@pytest.mark.live
@pytest.mark.asyncio
async def test_many_concurrent_streams(server: FakeOpenAI) -> None:
    count = 200
    server.default = Reply(text="concurrent streams all finish intact")
    limits = httpx2.Limits(max_connections=count, max_keepalive_connections=count)
    http_client = openai.DefaultAsyncHttpxClient(limits=limits)
    async with async_client(server, http_client=http_client) as client:

        async def one() -> str:
            received: list[str] = []
            await collect_text(await stream_chat(client), received)
            return "".join(received)

        texts = await asyncio.gather(*(one() for _ in range(count)))
    assert set(texts) == {server.default.text}
    assert len(server.requests) == count
    assert server.connections_accepted > 1  # really concurrent, not serialised


# --------------------------------------------------------------------------- #
# Faults, and which exception the SDK raises for each
# --------------------------------------------------------------------------- #


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_errors_raise_sdk_status_exceptions(
    server: FakeOpenAI, status: int, exception: type[openai.APIStatusError]
) -> None:
    server.script(Reply(status=status, retry_after=7))
    async with async_client(server) as client:
        with pytest.raises(exception) as caught:
            await stream_chat(client)
    assert caught.value.status_code == status
    assert caught.value.response.headers["retry-after"] == "7"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"]
    assert len(server.requests) == 1  # recorded even though it failed


@pytest.mark.asyncio
async def test_custom_error_message(server: FakeOpenAI) -> None:
    server.script(Reply(status=429, error_message="slow down"))
    async with async_client(server) as client:
        with pytest.raises(openai.RateLimitError, match="slow down"):
            await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("with_reset", "cause"),
    [(False, httpx2.RemoteProtocolError), (True, httpx2.ReadError)],
    ids=["fin", "rst"],
)
async def test_drop_mid_stream_raises_api_connection_error(
    server: FakeOpenAI, with_reset: bool, cause: type[Exception]
) -> None:
    server.script(
        Reply(chunks=["one", " two", " three", " four"], drop_after=2, drop_with_reset=with_reset)
    )
    received: list[str] = []
    async with async_client(server) as client:
        stream = await stream_chat(client)
        with pytest.raises(openai.APIConnectionError) as caught:
            await collect_text(stream, received)
    assert type(caught.value) is openai.APIConnectionError
    assert isinstance(caught.value.__cause__, cause)
    assert received == ["one", " two"]


@pytest.mark.asyncio
async def test_drop_before_non_streaming_response(server: FakeOpenAI) -> None:
    server.script(Reply(drop_after=0))
    async with async_client(server) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)


@pytest.mark.asyncio
async def test_stall_with_short_timeout_raises_api_timeout_error(server: FakeOpenAI) -> None:
    server.script(Reply(chunks=["a", "b", "c"], stall_after=1))  # stalls ~forever
    received: list[str] = []
    async with async_client(server, timeout=0.2) as client:
        stream = await stream_chat(client)
        with pytest.raises(openai.APITimeoutError) as caught:
            await collect_text(stream, received)
    assert isinstance(caught.value.__cause__, httpx2.ReadTimeout)
    assert received == ["a"]
    # The server notices the client giving up instead of sleeping for an hour.
    await asyncio.to_thread(_wait_until, lambda: server.disconnects_mid_response == 1)


@pytest.mark.asyncio
async def test_short_stall_then_stream_resumes(server: FakeOpenAI) -> None:
    server.script(Reply(chunks=["a", "b"], stall_after=1, stall_seconds=0.1))
    received: list[str] = []
    async with async_client(server, timeout=2) as client:
        await collect_text(await stream_chat(client), received)
    assert received == ["a", "b"]


@pytest.mark.asyncio
async def test_first_byte_delay_with_short_timeout_fails_in_create(server: FakeOpenAI) -> None:
    server.script(Reply(first_byte_delay=30))
    async with async_client(server, timeout=0.2) as client:
        with pytest.raises(openai.APITimeoutError):
            await stream_chat(client)


@pytest.mark.asyncio
async def test_malformed_sse_raises_bare_json_decode_error(server: FakeOpenAI) -> None:
    server.script(Reply(chunks=["ok", " more"], malformed_after=1))
    received: list[str] = []
    async with async_client(server) as client:
        stream = await stream_chat(client)
        with pytest.raises(json.JSONDecodeError) as caught:
            await collect_text(stream, received)
    assert not isinstance(caught.value, openai.OpenAIError)
    assert received == ["ok"]


@pytest.mark.asyncio
async def test_error_event_mid_stream_raises_plain_api_error(server: FakeOpenAI) -> None:
    server.script(Reply(chunks=["ok", " more"], error_after=1, error_message="model crashed"))
    received: list[str] = []
    async with async_client(server) as client:
        stream = await stream_chat(client)
        with pytest.raises(openai.APIError, match="model crashed") as caught:
            await collect_text(stream, received)
    assert type(caught.value) is openai.APIError
    assert received == ["ok"]


@pytest.mark.asyncio
async def test_connection_refused_raises_api_connection_error() -> None:
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="test", max_retries=0
    )
    async with client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await stream_chat(client)
    assert type(caught.value) is openai.APIConnectionError
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)


@pytest.mark.asyncio
async def test_api_key_enforced_when_configured() -> None:
    with FakeOpenAI(api_key="right") as fake:
        async with async_client(fake) as client:  # sends "test"
            with pytest.raises(openai.AuthenticationError):
                await stream_chat(client)
        assert fake.requests == []


# --------------------------------------------------------------------------- #
# Robustness
# --------------------------------------------------------------------------- #


def _wait_until(condition: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.asyncio
async def test_client_disconnect_mid_stream_is_quiet(
    server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server.script(Reply(text="word " * 200, delay=0.01))
    async with async_client(server) as client:
        stream = await stream_chat(client)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()
    await asyncio.to_thread(_wait_until, lambda: server.disconnects_mid_response == 1)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.asyncio
async def test_stop_does_not_wait_for_stalled_streams() -> None:
    fake = FakeOpenAI().start()
    fake.script(Reply(stall_after=0))
    async with async_client(fake, timeout=10) as client:
        stream = await stream_chat(client)
        started = time.monotonic()
        await asyncio.to_thread(fake.stop)
        assert time.monotonic() - started < 1.0
        with pytest.raises(openai.APIConnectionError):
            await collect_text(stream, [])


def test_wait_for_requests_and_reset(server: FakeOpenAI) -> None:
    with httpx2.Client() as http:
        http.post(f"{server.base_url}/chat/completions", json={"model": "m", "messages": []})
    assert server.wait_for_requests(1, timeout=1) == [{"model": "m", "messages": []}]
    with pytest.raises(TimeoutError):
        server.wait_for_requests(2, timeout=0.05)
    server.reset()
    assert server.requests == []
    assert server.request_headers == []


def test_bad_requests_get_openai_style_errors(server: FakeOpenAI) -> None:
    with httpx2.Client(base_url=server.base_url) as http:
        not_json = http.post("/chat/completions", content=b"{nope")
        unknown = http.get("/nowhere")
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404
    assert server.requests == []


@pytest.mark.live
def test_standalone_mode_serves_until_terminated() -> None:
    repo_root = Path(__file__).resolve().parents[1]
    module = "tests.support.fake_openai"
    command = [sys.executable, "-m", module, "--port", "0", "--text", "from cli"]
    with subprocess.Popen(command, cwd=repo_root, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            banner = process.stderr.readline()  # "... fake OpenAI API at http://... (Ctrl-C"
            base_url = banner.split(" at ", 1)[1].split()[0]
            with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
                completion = client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == "from cli"
        finally:
            process.terminate()
            assert process.wait(timeout=5) == 0
