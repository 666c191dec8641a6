"""Long conversations are trimmed to the model's context window: the system prompt and the
newest messages stay, the oldest go first, and the page says how many the model did not see."""

import asyncio

import pytest
from django.urls import reverse

from conversations.llm import context
from conversations.models import Message
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply
from tests.support.xss import parse

SYSTEM = {"role": "system", "content": "Be brief."}


def turn(number: int, words: int = 40) -> list[dict[str, str]]:
    """A question and its answer, each `words` words long."""
    return [
        {"role": "user", "content": f"question {number} " + "word " * words},
        {"role": "assistant", "content": f"answer {number} " + "word " * words},
    ]


class TestEstimates:
    def test_english_text_counts_more_tokens_than_a_real_tokenizer_would(self) -> None:
        # GPT and Llama tokenizers spend about one token per four characters of English.
        sentence = "The quick brown fox jumps over the lazy dog near the riverbank. " * 20
        assert context.estimate_tokens(sentence) >= len(sentence) / 4

    def test_every_character_outside_ascii_counts_as_a_whole_token(self) -> None:
        assert context.estimate_tokens("東京は晴れ") == 5
        assert context.estimate_tokens("héllo") == 1 + 2  # "hllo" (4 / 3.5 → 2) and "é"

    def test_an_empty_message_still_costs_its_framing(self) -> None:
        assert context.message_tokens({"role": "user", "content": ""}) > 0


class TestFit:
    def test_a_short_conversation_is_sent_whole(self) -> None:
        messages = [SYSTEM, *turn(1), {"role": "user", "content": "and now?"}]

        fitted = context.fit(messages, window=8192, reserve=1024)

        assert fitted.fits
        assert fitted.messages == messages
        assert fitted.left_out == 0

    def test_it_keeps_the_system_prompt_and_the_newest_messages(self) -> None:
        history = [message for number in range(1, 11) for message in turn(number)]
        newest = {"role": "user", "content": "the newest question"}
        messages = [SYSTEM, *history, newest]

        fitted = context.fit(messages, window=400, reserve=100)

        assert fitted.fits
        assert fitted.messages[0] == SYSTEM
        assert fitted.messages[-1] == newest
        kept = fitted.messages[1:]
        # What is kept is the end of the conversation, in order, and starts with a question.
        assert kept == [*history, newest][-len(kept) :]
        assert kept[0]["role"] == "user"
        assert 1 < len(kept) < len(history)
        assert fitted.left_out == len(history) + 1 - len(kept)
        sent = sum(context.message_tokens(message) for message in fitted.messages)
        assert sent + 100 <= 400

    def test_a_larger_window_or_smaller_reserve_keeps_more(self) -> None:
        messages = [SYSTEM, *[m for number in range(1, 11) for m in turn(number)]]

        small = context.fit(messages, window=800, reserve=300)
        larger = context.fit(messages, window=1600, reserve=300)
        less_reserved = context.fit(messages, window=800, reserve=50)

        assert small.left_out > larger.left_out
        assert small.left_out > less_reserved.left_out

    def test_a_newest_message_that_cannot_fit_is_refused(self) -> None:
        messages = [SYSTEM, *turn(1), {"role": "user", "content": "word " * 2000}]

        fitted = context.fit(messages, window=1000, reserve=200)

        assert not fitted.fits
        assert fitted.messages == []
        assert fitted.needed_tokens > fitted.window == 1000


@pytest.fixture
def small_window(two_providers):
    """The local provider gives llama3.2:3b a window of 300 tokens, 50 of them for the reply."""
    text = two_providers.file.read_text().replace(
        'default_model = "llama3.2:3b"',
        'default_model = "llama3.2:3b"\ncontext_windows = { "llama3.2:3b" = 300 }',
    )
    two_providers.file.write_text(text)
    return two_providers


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestLongConversations:
    async def test_the_model_sees_the_system_prompt_and_the_newest_messages_and_the_page_says_so(
        self, small_window, settings, make_conversation, alice_async_client
    ):
        settings.CHAT_REPLY_RESERVE_TOKENS = 50
        history = [
            (message["role"], message["content"])
            for number in range(1, 9)
            for message in turn(number, words=20)
        ]
        conversation = await asyncio.to_thread(
            make_conversation,
            metadata={
                "provider": "local",
                "model": "llama3.2:3b",
                "system_prompt": "You are terse.",
            },
            history=history,
        )
        small_window.local.script(Reply(text="Noted."))

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "What did I ask first?"}
        )

        [request] = await asyncio.to_thread(small_window.local.wait_for_requests, 1)
        sent = request["messages"]
        assert sent[0] == {"role": "system", "content": "You are terse."}
        assert sent[-1] == {"role": "user", "content": "What did I ask first?"}
        assert sent[1]["role"] == "user"
        assert [m["content"] for m in sent[1:-1]] == [content for _, content in history][
            -(len(sent) - 2) :
        ]
        left_out = len(history) - (len(sent) - 2)
        assert left_out > 0
        assert "question 1 " not in str(sent)
        reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alast()
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        assert reply.status == Message.Status.COMPLETE
        assert reply.metadata["left_out"] == left_out
        page = (await alice_async_client.get(conversation.get_absolute_url())).content.decode()
        note = parse(page).by_id(f"message-{reply.pk}-left-out").text()
        assert note == f"{left_out} earlier messages were left out of the model's view."

    async def test_a_message_too_long_for_the_model_is_not_sent_and_the_reply_says_why(
        self, small_window, settings, make_conversation, alice_async_client
    ):
        conversation = await asyncio.to_thread(
            make_conversation, metadata={"provider": "local", "model": "llama3.2:3b"}
        )

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "word " * 1000}
        )

        reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).aget()
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        assert reply.status == Message.Status.ERROR
        assert reply.error_text.startswith("This message is too long for llama3.2:3b")
        assert "context window holds 300" in reply.error_text
        assert small_window.local.requests == []

    async def test_a_conversation_that_fits_leaves_nothing_out_and_shows_no_note(
        self, two_providers, make_conversation, alice_async_client
    ):
        conversation = await asyncio.to_thread(
            make_conversation,
            metadata={"provider": "local", "model": "llama3.2:3b"},
            history=[("user", "Hi"), ("assistant", "Hello")],
        )

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "How are you?"}
        )

        [request] = await asyncio.to_thread(two_providers.local.wait_for_requests, 1)
        assert len(request["messages"]) == 3
        reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alast()
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        assert reply.metadata["left_out"] == 0
        page = (await alice_async_client.get(conversation.get_absolute_url())).content.decode()
        assert "left out of the model's view" not in page
