"""The OpenAI chat-completions wire format, for the servers that stand in for a provider.

The JSON objects of a reply (a whole `chat.completion`, or the `chat.completion.chunk`s of a
stream), their server-sent-event framing, error and model-list bodies, and the word-sized
tokens and word counts that stand in for a tokenizer. Two servers speak it: the offline model
(conversations/llm/offline.py), inside the process, and the fake OpenAI server of the tests,
the benchmarks and the README (tests/support/fake_openai.py), over TCP.
"""

import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# OpenAI names the backend configuration that answered in every object; the stand-ins name one.
SYSTEM_FINGERPRINT = "fp_chatsite"

SSE_DONE = b"data: [DONE]\n\n"

_TOKEN = re.compile(r"\s*\S+|\s+")


def split_into_tokens(text: str) -> list[str]:
    """Split text like a tokenizer roughly would: each word keeps its leading whitespace.

    ``"".join(split_into_tokens(t)) == t`` for every string ``t``.
    """
    return _TOKEN.findall(text)


def estimate_prompt_tokens(messages: object) -> int:
    """Roughly count prompt tokens as whitespace-separated words in message contents.

    Handles both plain-string contents and the list-of-parts form
    (``[{"type": "text", "text": ...}]``); anything else counts as zero.
    """
    if not isinstance(messages, list):
        return 0
    words = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    words += len(part["text"].split())
    return words


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def completion_chunk(
    *,
    completion_id: str,
    model: str,
    created: int,
    content: str | None = None,
    role: str | None = None,
    finish_reason: str | None = None,
    include_usage_field: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` carrying a delta, shaped like OpenAI's.

    The opening chunk has ``role="assistant", content=""``; the closing one has
    an empty delta and a ``finish_reason``. When the client asked for usage,
    OpenAI puts ``"usage": null`` on every chunk but the last, hence
    ``include_usage_field``.
    """
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage_field:
        chunk["usage"] = None
    return chunk


def usage_chunk(
    *, completion_id: str, model: str, created: int, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The trailing chunk sent for ``stream_options={"include_usage": True}``: no choices."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": usage_dict(prompt_tokens, completion_tokens),
    }


def chat_completion(
    *,
    completion_id: str,
    model: str,
    created: int,
    content: str,
    finish_reason: str = "stop",
    usage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` response body."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["usage"] = dict(usage)
    return body


def iter_stream_chunks(
    chunks: Iterable[str],
    *,
    model: str,
    completion_id: str | None = None,
    created: int | None = None,
    include_usage: bool = False,
    prompt_tokens: int = 0,
    finish_reason: str = "stop",
) -> Iterator[dict[str, Any]]:
    """Every chunk of a complete, fault-free stream, in order (``[DONE]`` excluded): the
    opening role chunk, one chunk per content piece, the closing chunk and, when asked for,
    the usage chunk. Write each as ``sse_event(chunk)``, then ``SSE_DONE``.
    """
    completion_id = completion_id or new_completion_id()
    created = int(time.time()) if created is None else created

    def chunk(**delta: str) -> dict[str, Any]:
        return completion_chunk(
            completion_id=completion_id,
            model=model,
            created=created,
            include_usage_field=include_usage,
            **delta,
        )

    yield chunk(role="assistant", content="")
    sent = 0
    for piece in chunks:
        sent += 1
        yield chunk(content=piece)
    yield chunk(finish_reason=finish_reason)
    if include_usage:
        yield usage_chunk(
            completion_id=completion_id,
            model=model,
            created=created,
            prompt_tokens=prompt_tokens,
            completion_tokens=sent,
        )


def chunk_content(chunk: Mapping[str, Any]) -> str:
    """The text a chunk adds to the reply ("" for the opening, closing and usage chunks)."""
    choices = chunk.get("choices") or [{}]
    return choices[0].get("delta", {}).get("content") or ""


def sse_event(data: Mapping[str, Any] | str) -> bytes:
    """Encode one server-sent event the way OpenAI does: ``data: <json>\\n\\n``."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return b"data: " + payload.encode() + b"\n\n"


def models_list(model_ids: Iterable[str], *, owned_by: str) -> dict[str, Any]:
    """The body of ``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": 1700000000, "owned_by": owned_by}
            for model_id in model_ids
        ],
    }


_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    # status: (type, message, code) as OpenAI returns them.
    400: ("invalid_request_error", "Invalid request.", None),
    401: (
        "invalid_request_error",
        "Incorrect API key provided: test. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
    ),
    403: ("invalid_request_error", "You are not allowed to access this resource.", None),
    404: ("invalid_request_error", "The requested resource does not exist.", None),
    429: (
        "requests",
        "Rate limit reached for requests. Please try again later.",
        "rate_limit_exceeded",
    ),
    500: ("server_error", "The server had an error while processing your request.", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error payload: ``{"error": {"message", "type", "param", "code"}}``."""
    error_type, default_message, code = _ERROR_DEFAULTS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", f"Error {status}", None),
    )
    return {
        "error": {
            "message": message or default_message,
            "type": error_type,
            "param": None,
            "code": code,
        }
    }
