"""A local, scriptable, OpenAI-compatible HTTP server for tests and benchmarks.

It speaks hand-written HTTP/1.1 over asyncio streams (standard library only) so a
test controls the wire byte for byte: when headers go out, how chunks are spaced,
and exactly how a stream breaks. The official ``openai`` SDK talks to it over real
TCP, so tests exercise the same code path as production.

Usage::

    with FakeOpenAI() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        server.script(Reply(text="Hello world"), Reply(status=429, retry_after=1))
        ...
        server.requests          # JSON bodies POSTed to /v1/chat/completions, in order
        server.request_headers   # their headers (lower-cased names), same order

Each chat request consumes the next scripted ``Reply``; when the script is empty,
``server.default`` answers. The server runs on its own event loop in a daemon
thread, so the same ``with`` block works in sync tests, async tests (any loop) and
scripts. Standalone, for manual testing and load tests::

    python -m tests.support.fake_openai --port 8090 --delay 0.02 --text "Hello there"

Run it as a separate process for benchmarks: in-process it shares the GIL with
the client under test and would skew the numbers.

The wire format (chunks, server-sent events, error bodies, word-sized tokens) comes
from ``conversations.llm.wire``, which the app's offline model speaks too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import secrets
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from conversations.llm.wire import (
    SSE_DONE,
    chat_completion,
    completion_chunk,
    error_body,
    estimate_prompt_tokens,
    models_list,
    new_completion_id,
    split_into_tokens,
    sse_event,
    usage_chunk,
    usage_dict,
)

logger = logging.getLogger(__name__)

DEFAULT_TEXT = "Hello! I am a fake model, and this is a perfectly ordinary reply."
DEFAULT_MODEL = "gpt-4o-mini"

#: Served by ``GET /v1/models`` (the ``default`` Reply's model is added if missing).
MODEL_IDS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")

#: What ``malformed_after`` sends: a ``data:`` line that is not JSON.
MALFORMED_SSE = b"data: {this is not json\n\n"

# Real headers are tiny; the cap only protects the server from a runaway client.
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024
# Hundreds of clients connect at once in load tests; the default of 100 would
# make the kernel drop SYNs and add one-second retransmit stalls to benchmarks.
_LISTEN_BACKLOG = 2048


# --------------------------------------------------------------------------- #
# Behaviour description
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Reply:
    """How the server answers one chat completion request.

    Fault injection counts *content* chunks (the role chunk does not count):
    ``drop_after=2`` means the client receives the role chunk and two content
    chunks, then the connection dies. At most one of ``stall_after``,
    ``drop_after``, ``malformed_after`` and ``error_after`` is normally set; if
    several are, they fire in that order at their respective counts. A count of
    0 fires right after the role chunk (headers and role sent, no content yet).
    Non-streaming requests honour the same faults at "the point where the body
    would be sent" (see ``_send_completion``).
    """

    #: The assistant's answer; split into word-ish tokens unless ``chunks`` is given.
    text: str = DEFAULT_TEXT
    #: Explicit content pieces, sent one per chunk; overrides ``text``.
    chunks: Sequence[str] | None = None
    #: Seconds to sleep before each content chunk (spacing between tokens).
    delay: float = 0.0
    #: Seconds to wait before sending anything at all, status line included.
    first_byte_delay: float = 0.0
    #: HTTP status; anything other than 200 sends an OpenAI-style JSON error body.
    status: int = 200
    #: Overrides the default error message for non-200 statuses.
    error_message: str | None = None
    #: ``Retry-After`` header value (seconds), sent with any status when set.
    retry_after: float | str | None = None
    #: After this many content chunks, go silent (socket open) for ``stall_seconds``,
    #: then carry on with the rest of the stream as if nothing happened.
    stall_after: int | None = None
    stall_seconds: float = 3600.0
    #: After this many content chunks, kill the connection with no terminating chunk.
    drop_after: int | None = None
    #: With ``drop_after``: send a TCP RST (SO_LINGER 0) instead of a plain FIN.
    drop_with_reset: bool = False
    #: After this many content chunks, send a ``data:`` line that is not JSON, then
    #: continue normally (a lenient client could skip it; the SDK does not).
    malformed_after: int | None = None
    #: After this many content chunks, send ``data: {"error": {...}}`` and end the
    #: stream, as OpenAI-compatible servers do for failures after headers went out.
    error_after: int | None = None
    #: Report token usage (stream: only if the request asked via ``stream_options``).
    usage: bool = True
    #: Model name to report; ``None`` echoes the request's ``model``.
    model: str | None = None
    finish_reason: str = "stop"

    def content_chunks(self) -> list[str]:
        """The content pieces to send, in order; they always join back to the reply text."""
        if self.chunks is not None:
            return list(self.chunks)
        return split_into_tokens(self.text)


# --------------------------------------------------------------------------- #
# Minimal HTTP/1.1
# --------------------------------------------------------------------------- #


class _ClientGone(Exception):
    """The peer disconnected (or the response was deliberately aborted)."""


class _BadRequest(Exception):
    """The request could not be parsed; answer 400 and close."""


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def wants_close(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection != "keep-alive"
        return connection == "close"


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Read one request; ``None`` means the client closed the connection cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from exc
        return None  # Idle keep-alive connection closed by the client: normal.
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc

    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _BadRequest(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()

    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked_body(reader)
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            raise _BadRequest("bad content-length") from exc
        if not 0 <= length <= _MAX_BODY_BYTES:
            raise _BadRequest("content-length out of range")
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise _ClientGone from exc
    return _Request(method.upper(), target, version, headers, body)


async def _read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadRequest("bad chunk size") from exc
            if size == 0:
                # Skip trailers up to the blank line that ends the message.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            if len(body) + size > _MAX_BODY_BYTES:
                raise _BadRequest("body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)  # CRLF after each chunk
    except asyncio.IncompleteReadError as exc:
        raise _ClientGone from exc


def _response_head(status: int, headers: Mapping[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_LAST_HTTP_CHUNK = b"0\r\n\r\n"


# --------------------------------------------------------------------------- #
# Server
# --------------------------------------------------------------------------- #


class FakeOpenAI:
    """A scriptable OpenAI-compatible server on 127.0.0.1, run in a daemon thread.

    Thread-safe: ``script``, ``default``, ``requests`` etc. may be used from any
    thread or event loop while the server is running.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Reply | None = None,
        api_key: str | None = None,
        record_requests: bool = True,
        models: Sequence[str] = MODEL_IDS,
    ) -> None:
        """``port=0`` picks a free port. With ``api_key`` set, requests must send
        ``Authorization: Bearer <api_key>`` or get a 401 (without it, any key works).
        ``record_requests=False`` keeps memory flat for long-running load tests.
        """
        self.host = host
        self.port = port
        #: Answers chat requests once the script is exhausted. Reassign freely.
        self.default: Reply = default or Reply()
        self.api_key = api_key
        self.record_requests = record_requests
        #: Served by ``GET /v1/models``. Reassign freely.
        self.models: tuple[str, ...] = tuple(models)
        #: Status of ``GET /v1/models``: anything but 200 sends an error body (a provider whose
        #: listing is broken or missing).
        self.models_status = 200
        self._models_requests = 0

        self._lock = threading.Lock()
        self._requests_seen = threading.Condition(self._lock)
        self._script: deque[Reply] = deque()
        self._requests: list[dict[str, Any]] = []
        self._request_headers: list[dict[str, str]] = []
        self._connections_accepted = 0
        self._disconnects_mid_response = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- public API ---------------------------------------------------------- #

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's ``base_url``, e.g. ``http://127.0.0.1:54321/v1``."""
        return f"{self.url}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue behaviours, consumed one per incoming chat completion request."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending_replies(self) -> int:
        """How many scripted replies have not been used yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the parsed JSON bodies of chat requests, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """Headers (lower-cased names) of the chat requests, same order as ``requests``."""
        with self._lock:
            return list(self._request_headers)

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far; shows whether a client reuses connections."""
        with self._lock:
            return self._connections_accepted

    @property
    def disconnects_mid_response(self) -> int:
        """How often a client hung up before its response was complete (e.g. cancel)."""
        with self._lock:
            return self._disconnects_mid_response

    @property
    def models_requests(self) -> int:
        """How many ``GET /v1/models`` requests arrived (to check a client caches the list)."""
        with self._lock:
            return self._models_requests

    def reset(self) -> None:
        """Forget scripted replies, recorded requests and counters (keeps ``default``)."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._request_headers.clear()
            self._models_requests = 0
            self._connections_accepted = 0
            self._disconnects_mid_response = 0

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` chat requests arrived; return them.

        Raises ``TimeoutError`` (always, with ``record_requests=False``). From async
        code use ``await asyncio.to_thread(server.wait_for_requests, n)``.
        """
        with self._requests_seen:
            if not self._requests_seen.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} chat requests, got {len(self._requests)} in {timeout}s"
                )
            return list(self._requests)

    def start(self) -> Self:
        """Bind and start serving in a daemon thread; returns once the port is open."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run_loop, name=f"FakeOpenAI:{self.port or 'auto'}", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection, then end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # Loop already closed: nothing to stop.
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            except TimeoutError:
                # Stopping the loop anyway makes _run_loop cancel what is left.
                logger.warning("fake OpenAI server: graceful shutdown timed out")
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # start()/stop() block for milliseconds only, but offloading keeps the
        # caller's event loop free to serve its own connections meanwhile.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- event loop plumbing ------------------------------------------------ #

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # Reported to start() and re-raised there.
                self._startup_error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            # Anything still pending (e.g. stop() timed out) is cancelled so the
            # loop closes without "Task was destroyed but it is pending" noise.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            self._loop = None

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(
            self._handle_connection,
            self.host,
            self.port,
            backlog=_LISTEN_BACKLOG,
            limit=_MAX_HEADER_BYTES,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- connection handling ------------------------------------------------ #

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with self._lock:
            self._connections_accepted += 1
        try:
            # Keep-alive: the SDK's connection pool sends many requests per socket.
            while True:
                try:
                    request = await _read_request(reader)
                except _BadRequest as exc:
                    await self._send_json(writer, 400, error_body(400, str(exc)), close=True)
                    return
                if request is None:
                    return
                keep_open = await self._dispatch(request, reader, writer)
                if not keep_open or request.wants_close:
                    return
        except (_ClientGone, ConnectionError, asyncio.IncompleteReadError):
            pass  # Clients hanging up mid-response is routine; never spam tracebacks.
        except asyncio.CancelledError:
            # Server shutdown: close at once, unsent data is irrelevant. The task
            # then simply ends; _shutdown() awaits it.
            writer.transport.abort()
        except Exception:
            logger.exception("fake OpenAI server: unexpected error while handling a connection")
        finally:
            self._handlers.discard(task)
            # close() (not abort()) so a final response still in asyncio's buffer,
            # or a deliberate FIN drop, reaches the client intact.
            if not writer.is_closing():
                writer.close()

    async def _dispatch(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; return False if the connection must be closed afterwards."""
        path = request.path.rstrip("/")
        if self.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            await self._send_json(writer, 401, error_body(401))
            return True
        if path == "/v1/chat/completions":
            if request.method != "POST":
                await self._send_json(writer, 405, error_body(405, "Use POST."))
                return True
            return await self._chat_completions(request, reader, writer)
        if path == "/v1/models":
            if request.method != "GET":
                await self._send_json(writer, 405, error_body(405, "Use GET."))
                return True
            with self._lock:
                self._models_requests += 1
            if self.models_status != 200:
                await self._send_json(writer, self.models_status, error_body(self.models_status))
                return True
            await self._send_json(writer, 200, self._models_body())
            return True
        await self._send_json(writer, 404, error_body(404, f"Unknown path {request.path}"))
        return True

    def _models_body(self) -> dict[str, Any]:
        ids = list(self.models)
        if self.default.model and self.default.model not in ids:
            ids.insert(0, self.default.model)
        return models_list(ids, owned_by="fake")

    async def _chat_completions(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            await self._send_json(writer, 400, error_body(400, "Request body is not valid JSON."))
            return True
        if not isinstance(body, dict):
            await self._send_json(writer, 400, error_body(400, "Request body must be an object."))
            return True

        # Record before anything can fail, so tests can assert on what was sent
        # even when the scripted reply is an error or a dropped connection.
        with self._requests_seen:
            reply = self._script.popleft() if self._script else self.default
            if self.record_requests:
                self._requests.append(body)
                self._request_headers.append(dict(request.headers))
                self._requests_seen.notify_all()
        logger.debug(
            "chat request: model=%s stream=%s messages=%d",
            body.get("model"),
            body.get("stream", False),
            len(body.get("messages") or []),
        )

        if reply.first_byte_delay:
            await self._sleep_or_disconnect(reader, reply.first_byte_delay)

        extra_headers: dict[str, str] = {}
        if reply.retry_after is not None:
            extra_headers["retry-after"] = str(reply.retry_after)
        if reply.status != 200:
            await self._send_json(
                writer, reply.status, error_body(reply.status, reply.error_message), extra_headers
            )
            return True

        model = reply.model or str(body.get("model") or DEFAULT_MODEL)
        prompt_tokens = estimate_prompt_tokens(body.get("messages"))
        if body.get("stream") is True:
            stream_options = body.get("stream_options")
            include_usage = (
                reply.usage
                and isinstance(stream_options, dict)
                and stream_options.get("include_usage") is True
            )
            return await self._send_stream(
                reply, model, prompt_tokens, include_usage, reader, writer, extra_headers
            )
        return await self._send_completion(
            reply, model, prompt_tokens, reader, writer, extra_headers
        )

    async def _send_completion(
        self,
        reply: Reply,
        model: str,
        prompt_tokens: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        extra_headers: dict[str, str],
    ) -> bool:
        """Non-streaming answer. Faults apply at the moment the body would be sent:
        the client sees a stall (then the normal answer), a connection drop with no
        response, a 200 whose body is not JSON, or (``error_after``) a 500. The
        counts themselves do not matter here. ``delay`` per chunk is still spent, as
        generation time, before any of that.
        """
        chunks = reply.content_chunks()
        if reply.delay:
            await self._sleep_or_disconnect(reader, reply.delay * len(chunks))
        if reply.stall_after is not None:
            await self._sleep_or_disconnect(reader, reply.stall_seconds)
        if reply.drop_after is not None:
            self._abort(writer, reset=reply.drop_with_reset)
            return False
        if reply.malformed_after is not None:
            await self._send_raw(writer, 200, b"{this is not json", extra_headers)
            return True
        if reply.error_after is not None:
            await self._send_json(writer, 500, error_body(500, reply.error_message), extra_headers)
            return True
        completion = chat_completion(
            completion_id=new_completion_id(),
            model=model,
            created=int(time.time()),
            content="".join(chunks),
            finish_reason=reply.finish_reason,
            usage=usage_dict(prompt_tokens, len(chunks)) if reply.usage else None,
        )
        await self._send_json(writer, 200, completion, extra_headers)
        return True

    async def _send_stream(
        self,
        reply: Reply,
        model: str,
        prompt_tokens: int,
        include_usage: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        extra_headers: dict[str, str],
    ) -> bool:
        """Stream SSE in HTTP/1.1 chunked encoding, which keeps the connection reusable.

        Each SSE event is its own HTTP chunk and is flushed immediately, so the
        client's read timing matches the scripted ``delay``.
        """
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            "connection": "keep-alive",
            "x-request-id": f"req_{secrets.token_hex(8)}",
            **extra_headers,
        }
        completion_id, created = new_completion_id(), int(time.time())
        chunk = functools.partial(
            completion_chunk,
            completion_id=completion_id,
            model=model,
            created=created,
            include_usage_field=include_usage,
        )
        opening = sse_event(chunk(role="assistant", content=""))
        # Head and first event in one write: one syscall, one TCP segment.
        await self._write(writer, _response_head(200, headers) + _http_chunk(opening))

        sent = 0
        for piece in reply.content_chunks():
            if await self._inject_fault(reply, sent, reader, writer):
                return False
            if reply.delay:
                await self._sleep_or_disconnect(reader, reply.delay)
            await self._write(writer, _http_chunk(sse_event(chunk(content=piece))))
            sent += 1
        if await self._inject_fault(reply, sent, reader, writer):
            return False

        tail = _http_chunk(sse_event(chunk(finish_reason=reply.finish_reason)))
        if include_usage:
            usage = usage_chunk(
                completion_id=completion_id,
                model=model,
                created=created,
                prompt_tokens=prompt_tokens,
                completion_tokens=sent,
            )
            tail += _http_chunk(sse_event(usage))
        # [DONE] and the terminating zero-length chunk go together: the SDK drains
        # the body after [DONE] for connection reuse and would otherwise wait.
        await self._write(writer, tail + _http_chunk(SSE_DONE) + _LAST_HTTP_CHUNK)
        return True

    async def _inject_fault(
        self,
        reply: Reply,
        sent: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Apply any fault scheduled after ``sent`` content chunks; True ends the stream."""
        if reply.stall_after == sent:
            await self._sleep_or_disconnect(reader, reply.stall_seconds)
        if reply.drop_after == sent:
            self._abort(writer, reset=reply.drop_with_reset)
            return True
        if reply.malformed_after == sent:
            await self._write(writer, _http_chunk(MALFORMED_SSE))
        if reply.error_after == sent:
            error = sse_event(error_body(500, reply.error_message))
            await self._write(writer, _http_chunk(error) + _LAST_HTTP_CHUNK)
            return True
        return False

    # -- low-level I/O ------------------------------------------------------- #

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            self._count_disconnect()
            raise _ClientGone
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError as exc:
            self._count_disconnect()
            raise _ClientGone from exc

    async def _sleep_or_disconnect(self, reader: asyncio.StreamReader, seconds: float) -> None:
        """Sleep, but end the response early if the client hangs up meanwhile.

        While a response is in flight an HTTP/1.1 client sends nothing, so any
        read result here is EOF (or a reset): without watching for it, a long
        stall would pin the handler until the stall ended.
        """
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except TimeoutError:
            return
        except ConnectionError as exc:
            self._count_disconnect()
            raise _ClientGone from exc
        if not data:
            self._count_disconnect()
            raise _ClientGone
        # A pipelining client (none we know of) would lose a byte here; treat the
        # protocol violation as a disconnect rather than answer garbage.
        raise _ClientGone

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects_mid_response += 1

    @staticmethod
    def _abort(writer: asyncio.StreamWriter, *, reset: bool) -> None:
        sock = writer.get_extra_info("socket")
        if reset and sock is not None:
            # Linger 0 turns close() into an immediate RST instead of a graceful FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            # close() flushes what was already written, then sends FIN: the client
            # gets every chunk so far and then an incomplete chunked body.
            writer.close()

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: Mapping[str, Any],
        extra_headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        await self._send_raw(writer, status, json.dumps(body).encode(), extra_headers, close=close)

    async def _send_raw(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        extra_headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        headers = {
            "content-type": "application/json",
            "content-length": str(len(payload)),
            "connection": "close" if close else "keep-alive",
            "x-request-id": f"req_{secrets.token_hex(8)}",
            **(extra_headers or {}),
        }
        await self._write(writer, _response_head(status, headers) + payload)


# --------------------------------------------------------------------------- #
# Standalone mode
# --------------------------------------------------------------------------- #


# The README's port for it, apart from chatsite's (8000, and 8001-8002 in production).
DEFAULT_PORT = 8090


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_openai",
        description="Serve a fake OpenAI-compatible API until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="reply text for every request")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--first-byte-delay", type=float, default=0.0)
    parser.add_argument("--model", default=None, help="model to report (default: echo)")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--verbose", action="store_true", help="log each chat request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Per-request lines are DEBUG on this module's logger only (not asyncio's).
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    reply = Reply(
        text=args.text,
        delay=args.delay,
        first_byte_delay=args.first_byte_delay,
        model=args.model,
    )
    server = FakeOpenAI(
        host=args.host,
        port=args.port,
        default=reply,
        api_key=args.api_key,
        record_requests=False,
    )
    stop_requested = threading.Event()
    # Handle SIGTERM as well as Ctrl-C: benchmark scripts start this in the
    # background (where shells ignore SIGINT) and stop it with `kill`.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    with server:
        logger.info("fake OpenAI API at %s (Ctrl-C to stop)", server.base_url)
        stop_requested.wait()
    logger.info("fake OpenAI API stopped")


if __name__ == "__main__":
    main()
