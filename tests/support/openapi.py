"""Every answer of the JSON API that a test receives, checked against the OpenAPI schema
(conversations/api_schema.py), as zulip checks its tests' responses: the schema cannot drift
from what the API does without a test failing.

This module is a pytest plugin (tests/conftest.py loads it). For the whole session it wraps the
clients the tests reach the API with: Django's test Client and AsyncClient, and httpx2's Client
and AsyncClient (the live tests' HTTP to a daphne, httpx2.post and httpx2.stream included). A
response to a path under /api/, the documentation page aside, must be:
- for an operation the schema documents: a status documented for it, with a content type
  documented for that status, and a body valid against the schema given there; a stream of
  server-sent events has each event checked as it arrives, against the payload its media type
  documents under `x-events`;
- for any other path or method: a refusal, with the `Error` body.
As in zulip's check, an object may hold only the properties its schema names: a field the API
sends without documenting it is drift too.

A mismatch raises SchemaMismatch where the test reads the response. One that test code
swallows (a thread reading a stream keeps what it raised) still fails the test at its end.
"""

import codecs
import functools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps

import httpx2
import pytest
from django.test import AsyncClient, Client
from django.urls import reverse
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match

from conversations.api.schema import schema

API_PREFIX = "/api/"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}  # a daphne of the live tests


class SchemaMismatch(AssertionError):
    """An API response that the OpenAPI schema does not describe."""


_mismatches: list[SchemaMismatch] = []
_lock = threading.Lock()


def _mismatch(where: str, problem: str) -> SchemaMismatch:
    mismatch = SchemaMismatch(
        f"{where}, which the OpenAPI schema (conversations/api_schema.py) does not describe: "
        + problem
    )
    with _lock:
        _mismatches.append(mismatch)
    return mismatch


FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # RFC 3339, the JSON Schema format: a date, a time and a zone.
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@functools.cache
def _described(document: str) -> dict:
    """The schema, parsed from `document`, with its objects closed."""
    return _closed(json.loads(document))


def _closed(node: object) -> object:
    """The schema with every object that names its properties taking no others."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _closed(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        closed["additionalProperties"] = False
    return closed


REFUSAL = {
    "description": "Not an operation of the API: a refusal.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


# What an answer on a path or with a method the schema does not list may be: a refusal with the
# API's `Error` body.
UNDOCUMENTED = {"4XX": REFUSAL, "5XX": REFUSAL}


def _operation(described: dict, method: str, path: str) -> tuple[str, dict | None]:
    """The documented path `path` matches, and its operation for `method` if it has one."""
    segments = path.split("/")
    for template, item in described["paths"].items():
        expected = template.split("/")
        if len(expected) == len(segments) and all(
            want == got or (want.startswith("{") and got)
            for want, got in zip(expected, segments, strict=True)
        ):
            return template, item.get(method.lower())
    return path, None


class BodyCheck:
    """Checks one response: its status and content type at once, its body as it is read."""

    def __init__(self, method: str, path: str, status: int, content_type: str) -> None:
        # Built afresh for every response: a test may change a setting the schema reads.
        self.described = _described(json.dumps(schema()))
        self.validators: dict[str, Draft202012Validator] = {}
        template, operation = _operation(self.described, method, path)
        responses = operation["responses"] if operation else UNDOCUMENTED
        self.where = f"{method} {template} answered {status}"
        if not operation:
            self.where += " (no such operation in the schema)"
        documented = responses.get(str(status)) or responses.get(f"{status // 100}XX")
        if documented is None:
            raise _mismatch(self.where, f"{status} is not documented; {sorted(responses)} are")
        self.content = documented.get("content", {})
        self.media_type = content_type.partition(";")[0].strip()
        if self.content and self.media_type not in self.content:
            raise _mismatch(
                self.where,
                f"content type {content_type!r} is not documented; {sorted(self.content)} are",
            )
        self.media = self.content.get(self.media_type, {})
        self.body = b""
        self.text = codecs.getincrementaldecoder("utf-8")()
        self.pending = ""

    def feed(self, chunk: bytes) -> None:
        if self.media_type != "text/event-stream":
            self.body += chunk
            return
        self.pending += self.text.decode(chunk).replace("\r\n", "\n")
        *events, self.pending = self.pending.split("\n\n")
        for event in events:
            self._check_event(event)

    def close(self) -> None:
        """The body has been read to its end."""
        if not self.content:
            if self.body:
                raise _mismatch(self.where, f"no body is documented: {self.body[:200]!r}")
        elif self.media_type != "text/event-stream" and "schema" in self.media:
            try:
                document = json.loads(self.body)
            except ValueError:
                raise _mismatch(self.where, f"the body is not JSON: {self.body[:200]!r}") from None
            self._validate(self.media["schema"], document, "the body")

    def _check_event(self, block: str) -> None:
        name, data = "message", []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            if field == "event":
                name = value.removeprefix(" ")
            elif field == "data":
                data.append(value.removeprefix(" "))
        if not data:
            return  # comments only, such as a keep-alive
        documented = self.media.get("x-events", {})
        if name not in documented:
            raise _mismatch(
                self.where, f"event {name!r} is not documented; {sorted(documented)} are"
            )
        try:
            payload = json.loads("\n".join(data))
        except ValueError:
            raise _mismatch(self.where, f"event {name!r} carries no JSON: {data!r}") from None
        self._validate(documented[name], payload, f"event {name!r}")

    def _validate(self, subschema: dict, document: object, what: str) -> None:
        if what not in self.validators:
            root = {**subschema, "components": self.described["components"]}
            self.validators[what] = Draft202012Validator(root, format_checker=FORMATS)
        errors = list(self.validators[what].iter_errors(document))
        if errors:
            error, shown = best_match(errors), json.dumps(document)
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise _mismatch(
                self.where,
                f"{what} does not match the schema at {error.json_path}: {error.message}{more}"
                f"\n    {shown[:500]}{'…' if len(shown) > 500 else ''}",
            )


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIX) and path != reverse("api_docs")


def check_whole(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Check a response read whole."""
    check = BodyCheck(method, path, status, content_type)
    if method != "HEAD":
        check.feed(body)
        check.close()


# --------------------------------------------------------------------------- #
# The clients, wrapped
# --------------------------------------------------------------------------- #


def _checked_django_response(response) -> None:
    request = getattr(response, "wsgi_request", None) or response.asgi_request
    if not _is_api(request.path):
        return
    content_type = response.get("Content-Type", "")
    if not response.streaming:
        check_whole(
            request.method, request.path, response.status_code, content_type, response.content
        )
        return
    check = BodyCheck(request.method, request.path, response.status_code, content_type)
    content = response.streaming_content
    if response.is_async:

        async def checked_async() -> AsyncIterator[bytes]:
            async for chunk in content:
                check.feed(chunk)
                yield chunk
            check.close()

        response.streaming_content = checked_async()
    else:

        def checked() -> Iterator[bytes]:
            for chunk in content:
                check.feed(chunk)
                yield chunk
            check.close()

        response.streaming_content = checked()


class _CheckedStream(httpx2.SyncByteStream):
    def __init__(self, stream: httpx2.SyncByteStream, check: BodyCheck) -> None:
        self.stream, self.check = stream, check

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.check.feed(chunk)
            yield chunk
        self.check.close()

    def close(self) -> None:
        self.stream.close()


class _CheckedAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, check: BodyCheck) -> None:
        self.stream, self.check = stream, check

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.check.feed(chunk)
            yield chunk
        self.check.close()

    async def aclose(self) -> None:
        await self.stream.aclose()


def _checked_httpx_response(response: httpx2.Response, streamed: bool, asynchronous: bool) -> None:
    url = response.request.url
    if url.host not in LOCAL_HOSTS or not _is_api(url.path):
        return
    method, content_type = response.request.method, response.headers.get("content-type", "")
    if not streamed:
        check_whole(method, url.path, response.status_code, content_type, response.content)
        return
    check = BodyCheck(method, url.path, response.status_code, content_type)
    if asynchronous:
        response.stream = _CheckedAsyncStream(response.stream, check)
    else:
        response.stream = _CheckedStream(response.stream, check)


def _wrap(cls: type, name: str, make_wrapper) -> None:
    original = getattr(cls, name)
    setattr(cls, name, wraps(original)(make_wrapper(original)))


def _django(request):
    def request_and_check(self, **kwargs):
        response = request(self, **kwargs)
        _checked_django_response(response)
        return response

    return request_and_check


def _django_async(request):
    async def request_and_check(self, **kwargs):
        response = await request(self, **kwargs)
        _checked_django_response(response)
        return response

    return request_and_check


def _httpx(send):
    def send_and_check(self, request, **kwargs):
        response = send(self, request, **kwargs)
        _checked_httpx_response(response, kwargs.get("stream", False), asynchronous=False)
        return response

    return send_and_check


def _httpx_async(send):
    async def send_and_check(self, request, **kwargs):
        response = await send(self, request, **kwargs)
        _checked_httpx_response(response, kwargs.get("stream", False), asynchronous=True)
        return response

    return send_and_check


# --------------------------------------------------------------------------- #
# The plugin
# --------------------------------------------------------------------------- #


def pytest_configure(config: pytest.Config) -> None:
    _wrap(Client, "request", _django)
    _wrap(AsyncClient, "request", _django_async)
    _wrap(httpx2.Client, "send", _httpx)
    _wrap(httpx2.AsyncClient, "send", _httpx_async)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    with _lock:
        _mismatches.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test that passed although a response did not match the schema (its mismatch was
    swallowed, by a thread that reads a stream) fails."""
    report = yield
    if call.when == "call" and report.passed and _mismatches:
        report.outcome = "failed"
        report.longrepr = "\n\n".join(str(mismatch) for mismatch in _mismatches)
    return report


@contextmanager
def expected_mismatch() -> Iterator[pytest.ExceptionInfo[SchemaMismatch]]:
    """For the tests of this check: the mismatch raised inside is expected, and no failure."""
    with pytest.raises(SchemaMismatch) as raised:
        yield raised
    with _lock:
        _mismatches.remove(raised.value)
