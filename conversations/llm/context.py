"""Fitting a conversation into a model's context window.

Tokens are estimated offline, with no tokenizer: each provider has its own, and downloading one
at run time would break offline use. The estimate is deliberately pessimistic, since guessing
low sends a request the provider refuses while guessing high only leaves out one more old
message: ASCII text counts one token per 3.5 characters (English averages about 4 with GPT and
Llama tokenizers, code somewhat fewer), and every other character counts as a whole token
(accented letters, CJK and emoji take one to three tokens each, so this is about right for them).
Each message adds a few tokens of framing (role, separators), and the reply a few more.
"""

import math
from dataclasses import dataclass

ASCII_CHARS_PER_TOKEN = 3.5
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3


def estimate_tokens(text: str) -> int:
    """A conservative estimate of the tokens `text` takes (see the module's docstring)."""
    ascii_chars = sum(1 for character in text if character.isascii())
    return math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN) + (len(text) - ascii_chars)


def message_tokens(message: dict[str, str]) -> int:
    return estimate_tokens(message.get("content", "")) + MESSAGE_OVERHEAD_TOKENS


@dataclass(frozen=True)
class Fitted:
    messages: list[dict[str, str]]
    # Earlier messages of the conversation the model does not see.
    left_out: int
    # Whether even the system prompt and the newest message fit; when not, `messages` is empty.
    fits: bool
    # The estimated tokens of what is sent plus the room kept for the reply, and the window.
    needed_tokens: int
    window: int


def fit(messages: list[dict[str, str]], *, window: int, reserve: int) -> Fitted:
    """Keep the system messages and the newest others that fit in `window` tokens, less
    `reserve` kept for the reply; drop the oldest first.

    The kept history never starts with an assistant message: a reply without its question
    confuses some models, and several chat templates require the user to speak first.
    """
    system = [message for message in messages if message.get("role") == "system"]
    history = [message for message in messages if message.get("role") != "system"]
    available = window - reserve - REPLY_PRIMING_TOKENS - sum(map(message_tokens, system))
    newest_needs = message_tokens(history[-1]) if history else 0
    if newest_needs > available:
        needed = window - available + newest_needs
        return Fitted([], len(history) - 1 if history else 0, False, needed, window)
    kept: list[dict[str, str]] = []
    used = 0
    for message in reversed(history):
        cost = message_tokens(message)
        if used + cost > available:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].get("role") == "assistant":
        kept.pop(0)
    return Fitted(system + kept, len(history) - len(kept), True, window - available + used, window)
