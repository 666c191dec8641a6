"""The one module that talks to the model provider.

Everything else calls `stream_reply()`, which yields text deltas and ends with one `ReplyEnd`,
or raises `ProviderError` carrying a message fit to show the user. Nothing else imports `openai`.
"""

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache

import httpx2
import openai
from django.conf import settings

from conversations.llm import providers
from conversations.llm.offline import OFFLINE_MODEL, OfflineTransport


@dataclass(frozen=True)
class ReplyEnd:
    model: str
    finish_reason: str
    usage: dict = field(default_factory=dict)


class ProviderError(Exception):
    """A failure of the model provider, with a message written for the person chatting."""

    def __init__(self, user_message: str, *, kind: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.kind = kind


def is_offline(slug: str = "") -> bool:
    """Whether the built-in offline model answers: for this provider, or (without a slug) for
    the whole site, when no provider is configured."""
    if slug:
        chosen = providers.get(slug)
        return chosen is not None and chosen.offline
    return all(chosen.offline for chosen in providers.configured().values())


def default_model() -> str:
    return providers.default_provider().default_model


@lru_cache(maxsize=16)
def _client(
    base_url: str,
    api_key: str,
    timeout: float,
    connect_timeout: float,
    retries: int,
    max_connections: int,
    offline: bool = False,
) -> openai.AsyncOpenAI:
    if offline:
        return openai.AsyncOpenAI(
            api_key="offline",
            base_url="http://offline.invalid/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=OfflineTransport()),
        )
    return openai.AsyncOpenAI(
        # Local servers (Ollama, vLLM, llama.cpp) ignore the key, but the SDK requires one.
        api_key=api_key or "not-needed",
        base_url=base_url or None,
        timeout=httpx2.Timeout(timeout, connect=connect_timeout),
        max_retries=retries,
        # The SDK's own pool opens at most 1,000 connections and keeps 100 alive: past 1,000
        # replies streaming at once a request waits for a free one (docs/performance.md).
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
        ),
    )


def _provider(slug: str) -> providers.Provider:
    chosen = providers.get(slug)
    if chosen is None:
        raise ProviderError(
            f"The provider “{slug}” chosen for this conversation is no longer configured. "
            "Choose another model in the conversation's settings.",
            kind="config",
        )
    return chosen


def get_client(slug: str = "") -> openai.AsyncOpenAI:
    """The client of a provider (the site's default one without a slug)."""
    chosen = _provider(slug)
    return _client(
        chosen.base_url,
        chosen.api_key,
        settings.OPENAI_TIMEOUT,
        settings.OPENAI_CONNECT_TIMEOUT,
        settings.OPENAI_MAX_RETRIES,
        settings.OPENAI_MAX_CONNECTIONS,
        chosen.offline,
    )


# Listing models runs while a page renders: a provider that is away must not hold it up long.
MODEL_LISTING_TIMEOUT = 5.0


def list_models(chosen: providers.Provider) -> list[str]:
    """The model ids the provider's /v1/models lists, in its order. Raises ProviderError."""
    if chosen.offline:
        return [OFFLINE_MODEL]
    # A client of its own, closed at once: the streaming clients belong to an event loop, and
    # this runs in whatever thread renders the page.
    client = openai.OpenAI(
        api_key=chosen.api_key or "not-needed",
        base_url=chosen.base_url or None,
        timeout=httpx2.Timeout(MODEL_LISTING_TIMEOUT, connect=MODEL_LISTING_TIMEOUT),
        max_retries=0,
    )
    try:
        with client:
            return [_storable(model.id) for model in client.models.list() if model.id]
    except openai.APIStatusError as error:
        raise _status_error_message(error) from error
    except (openai.APIError, httpx2.HTTPError, ValueError) as error:
        raise ProviderError(
            f"Could not list the models of {chosen.label}.", kind="models"
        ) from error


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    """Text from the provider as the database can keep it: PostgreSQL refuses NUL characters
    (in text and in JSON alike), and UTF-8 cannot encode half a surrogate pair (which JSON can
    spell); either in a reply would lose the whole reply."""
    return _UNSTORABLE.sub("\ufffd", text)


def _status_error_message(error: openai.APIStatusError) -> ProviderError:
    status = error.status_code
    if status == 401:
        return ProviderError(
            "The model provider rejected the API key (HTTP 401). Check OPENAI_API_KEY.",
            kind="auth",
        )
    if status == 403:
        return ProviderError(
            "The model provider refused access to this model (HTTP 403).", kind="auth"
        )
    if status == 404:
        return ProviderError(
            "The model provider does not know this model (HTTP 404). Check the model name.",
            kind="not_found",
        )
    if status == 429:
        retry_after = error.response.headers.get("retry-after")
        hint = f" Try again in {retry_after} s." if retry_after else " Try again in a moment."
        return ProviderError(
            f"The model provider is rate limiting requests (HTTP 429).{hint}", kind="rate_limit"
        )
    if status >= 500:
        return ProviderError(
            f"The model provider had an internal error (HTTP {status}). Try again later.",
            kind="server",
        )
    return ProviderError(
        f"The model provider refused the request (HTTP {status}): {_storable(error.message)}",
        kind="request",
    )


async def stream_reply(
    messages: list[dict[str, str]],
    *,
    model: str,
    provider: str = "",
    temperature: float | None = None,
) -> AsyncIterator[str | ReplyEnd]:
    """Stream a chat completion from a provider (by slug; empty for the site's default): yield
    text deltas, then one ReplyEnd. A temperature of None leaves the provider's default.

    Raises ProviderError for every failure, including a stream that stops before the model
    said it was finished.
    """
    usage: dict = {}
    finish_reason = ""
    reported_model = model
    answering = False
    try:
        options = {} if temperature is None else {"temperature": temperature}
        stream = await get_client(provider).chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        answering = True
        # Leaving this block (normally, on error, or by cancellation) closes the HTTP response,
        # so the provider stops generating and billing.
        async with stream:
            async for chunk in stream:
                reported_model = _storable(chunk.model) if chunk.model else reported_model
                if chunk.usage:
                    usage = {
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta and choice.delta.content:
                    yield _storable(choice.delta.content)
                if choice.finish_reason:
                    finish_reason = _storable(choice.finish_reason)
    except openai.APIStatusError as error:
        raise _status_error_message(error) from error
    except openai.APITimeoutError as error:
        raise ProviderError(
            "The model provider did not answer in time. Try again.", kind="timeout"
        ) from error
    except openai.APIConnectionError as error:
        if answering:
            # The SDK reports a connection cut mid-stream as a connection error too, but the
            # provider was reached: the configuration is fine, the reply broke off.
            raise ProviderError(
                "The connection to the model provider broke off mid-reply.", kind="stream"
            ) from error
        raise ProviderError(
            "Could not reach the model provider. Check OPENAI_BASE_URL and that the server is up.",
            kind="connection",
        ) from error
    except openai.APIError as error:
        # An error event inside an otherwise healthy stream.
        raise ProviderError(
            f"The model provider reported an error mid-reply: {_storable(error.message)}",
            kind="stream",
        ) from error
    except httpx2.TimeoutException as error:
        raise ProviderError(
            "The model provider stopped sending the reply (timed out mid-reply).", kind="timeout"
        ) from error
    except (httpx2.HTTPError, ValueError) as error:
        # A cut connection or a garbled event (the SDK raises a bare JSONDecodeError for it).
        raise ProviderError(
            "The connection to the model provider broke off mid-reply.", kind="stream"
        ) from error
    if not finish_reason:
        raise ProviderError(
            "The reply ended unexpectedly: the model provider closed the stream early.",
            kind="stream",
        )
    yield ReplyEnd(model=reported_model, finish_reason=finish_reason, usage=usage)


async def complete(messages: list[dict[str, str]], *, model: str, provider: str = "") -> str:
    """The whole text of a reply, for short requests such as a title."""
    reply = stream_reply(messages, model=model, provider=provider)
    return "".join([item async for item in reply if isinstance(item, str)])
