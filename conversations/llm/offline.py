"""The built-in offline model: an OpenAI-compatible endpoint that lives inside the process.

It is an httpx transport, so the `openai` SDK talks to it exactly as it talks to a real
provider (same request, same server-sent events, same parsing): the offline demo exercises the
whole streaming path without a network or an API key.
"""

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx2
from django.conf import settings

OFFLINE_MODEL = "offline-demo"

_TOKEN = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into word-sized pieces whose concatenation is the text."""
    return _TOKEN.findall(text)


def sse_event(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def completion_chunk(
    completion_id: str,
    model: str,
    *,
    content: str | None = None,
    role: str | None = None,
    finish_reason: str | None = None,
    usage: dict | None = None,
) -> dict:
    """One `chat.completion.chunk` object, as OpenAI streams them."""
    delta: dict = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk: dict = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage:
        chunk["usage"] = usage
    return chunk


def count_words(messages: list[dict]) -> int:
    return sum(len(str(message.get("content", "")).split()) for message in messages)


def offline_reply(messages: list[dict]) -> str:
    last_user_text = next(
        (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""
    )
    quoted = "\n".join(f"> {line}" for line in str(last_user_text)[:300].splitlines()) or "> …"
    turns = sum(1 for m in messages if m.get("role") == "user")
    return (
        "**This is the offline demo model**, built into chatsite so you can try it without "
        "an API key or a network. It does not understand you; it shows how replies stream, "
        "are stored and render as Markdown.\n\n"
        f"You wrote:\n\n{quoted}\n\n"
        f"This conversation has {turns} message{'s' if turns != 1 else ''} from you so far, "
        "and all of them were sent to the model with this request.\n\n"
        "To talk to a real model, stop the server and start it again with one of:\n\n"
        "- `OPENAI_API_KEY=sk-...` for OpenAI\n"
        "- `OPENAI_BASE_URL=http://127.0.0.1:11434/v1 CHAT_DEFAULT_MODEL=llama3.2` for a "
        "local Ollama that has pulled `llama3.2`\n"
        "- `OPENAI_BASE_URL=http://127.0.0.1:8100/v1 CHAT_DEFAULT_MODEL=<the model it serves>` "
        "for vLLM started with `--port 8100` (the name must match)\n\n"
        "README.md, *Connecting a model*, has more.\n\n"
        "```python\nprint('Hello from the offline model')\n```\n"
    )


class _SSEStream(httpx2.AsyncByteStream):
    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for event in self._events:
            yield event


class OfflineTransport(httpx2.AsyncBaseTransport):
    """Answers `/chat/completions` and `/models` like an OpenAI-compatible server."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/models"):
            body = {"object": "list", "data": [{"id": OFFLINE_MODEL, "object": "model"}]}
            return httpx2.Response(200, json=body)
        if request.method == "POST" and path.endswith("/chat/completions"):
            payload = json.loads(await request.aread())
            return self._completion(payload)
        return httpx2.Response(404, json={"error": {"message": "Not found", "type": "invalid"}})

    def _completion(self, payload: dict) -> httpx2.Response:
        messages = payload.get("messages", [])
        model = payload.get("model") or OFFLINE_MODEL
        tokens = split_tokens(offline_reply(messages))
        usage = {
            "prompt_tokens": count_words(messages),
            "completion_tokens": len(tokens),
            "total_tokens": count_words(messages) + len(tokens),
        }
        completion_id = f"chatcmpl-offline-{uuid.uuid4().hex[:12]}"
        if not payload.get("stream"):
            body = {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            return httpx2.Response(200, json=body)
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            yield sse_event(completion_chunk(completion_id, model, role="assistant", content=""))
            for token in tokens:
                if settings.CHAT_OFFLINE_TOKEN_DELAY:
                    await asyncio.sleep(settings.CHAT_OFFLINE_TOKEN_DELAY)
                yield sse_event(completion_chunk(completion_id, model, content=token))
            yield sse_event(completion_chunk(completion_id, model, finish_reason="stop"))
            if include_usage:
                yield sse_event(completion_chunk(completion_id, model, usage=usage))
            yield sse_event("[DONE]")

        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_SSEStream(events())
        )
