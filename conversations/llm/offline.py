"""The built-in offline model: an OpenAI-compatible endpoint that lives inside the process.

It is an httpx transport, so the `openai` SDK talks to it exactly as it talks to a real
provider (same request, same server-sent events, same parsing): the offline demo exercises the
whole streaming path without a network or an API key. Its chunks and events are built by
conversations/llm/wire.py, as those of the tests' fake OpenAI server are.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx2
from django.conf import settings

from conversations.llm import wire

OFFLINE_MODEL = "offline-demo"


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
            return httpx2.Response(200, json=wire.models_list([OFFLINE_MODEL], owned_by="chatsite"))
        if request.method == "POST" and path.endswith("/chat/completions"):
            payload = json.loads(await request.aread())
            return self._completion(payload)
        return httpx2.Response(404, json=wire.error_body(404, "Not found"))

    def _completion(self, payload: dict) -> httpx2.Response:
        messages = payload.get("messages", [])
        model = payload.get("model") or OFFLINE_MODEL
        tokens = wire.split_into_tokens(offline_reply(messages))
        prompt_tokens = wire.estimate_prompt_tokens(messages)
        completion_id, created = wire.new_completion_id(), int(time.time())
        if not payload.get("stream"):
            body = wire.chat_completion(
                completion_id=completion_id,
                model=model,
                created=created,
                content="".join(tokens),
                usage=wire.usage_dict(prompt_tokens, len(tokens)),
            )
            return httpx2.Response(200, json=body)
        chunks = wire.iter_stream_chunks(
            tokens,
            model=model,
            completion_id=completion_id,
            created=created,
            include_usage=bool((payload.get("stream_options") or {}).get("include_usage")),
            prompt_tokens=prompt_tokens,
        )

        async def events() -> AsyncIterator[bytes]:
            for chunk in chunks:
                if settings.CHAT_OFFLINE_TOKEN_DELAY and wire.chunk_content(chunk):
                    await asyncio.sleep(settings.CHAT_OFFLINE_TOKEN_DELAY)
                yield wire.sse_event(chunk)
            yield wire.SSE_DONE

        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_SSEStream(events())
        )
