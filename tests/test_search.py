"""Searching one's conversations: titles and the current text of messages, archived ones too,
with snippets that show the match and links that land on the very message."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from conversations import search
from conversations.models import Conversation, Message
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.replies import wait_for_reply
from tests.support.xss import (
    PAYLOADS,
    Element,
    executable_markup,
    foreign_markup_in_user_content,
    parse,
)

HTMX = {"HX-Request": "true"}

only_on_postgresql = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="full-text search (ranking, websearch syntax, ts_headline) is PostgreSQL's",
)
only_on_the_fallback = pytest.mark.skipif(
    "connection.vendor == 'postgresql'",
    reason="PostgreSQL uses full-text search, not the case-insensitive fallback",
)


def results_page(client, query: str, **params) -> Element:
    response = client.get(reverse("search"), {"q": query, **params})
    assert response.status_code == 200
    html = response.content.decode()
    assert executable_markup(html) == []
    assert foreign_markup_in_user_content(html) == []
    return parse(html)


def hits(document: Element) -> list[Element]:
    return document.all("li", class_name="search-hit")


def snippets(document: Element) -> list[Element]:
    return document.all(class_name="search-snippet")


def marked_texts(element: Element) -> list[str]:
    return [mark.text() for mark in element.all("mark")]


def markup_other_than_marks(element: Element) -> list[str]:
    return [e.describe() for e in list(element.iter())[1:] if e.tag != "mark" or e.attrs]


@pytest.fixture
def library(make_conversation, bob):
    """Alice's conversations about plants, an archived one, an edited message, and Bob's."""
    ferns = make_conversation(
        title="Ferns at home",
        history=[
            ("user", "How often should I water a Boston fern?"),
            ("assistant", "Keep the soil moist: water a fern about twice a week, less in winter."),
        ],
    )
    cactus = make_conversation(
        title="Cactus care",
        history=[("user", "Does a cactus need much light?"), ("assistant", "Lots of it.")],
    )
    Conversation.objects.filter(pk=cactus.pk).update(archived_at=timezone.now())
    question = cactus.messages.get(role="user")
    edited = cactus.messages.create(
        role="user", content="Rewritten: what about orchids?", created_at=question.created_at
    )
    question.superseded_by = edited
    question.save(update_fields=["superseded_by"])
    make_conversation(
        owner=bob, title="Bob's fern", history=[("user", "My fern secret: coffee grounds")]
    )
    return ferns, cactus


@pytest.mark.django_db
class TestWhatIsFound:
    def test_titles_and_message_text_of_the_users_own_conversations(self, alice_client, library):
        ferns, _ = library

        page = results_page(alice_client, "fern")

        titles = [a.text() for a in page.all("a", class_name="search-hit-title")]
        assert titles == ["Ferns at home"]
        linked = [a.attrs["href"] for a in page.all("a", class_name="search-hit-link")]
        expected = {f"/c/{ferns.pk}/?message={m.pk}#message-{m.pk}" for m in ferns.messages.all()}
        assert set(linked) == expected
        assert "coffee" not in str([e.text() for e in page.iter()])

    def test_archived_conversations_are_found_and_labelled(self, alice_client, library):
        page = results_page(alice_client, "lots")

        [hit] = hits(page)
        assert hit.all(class_name="search-hit-title")[0].text() == "Cactus care"
        assert [b.text() for b in hit.all(class_name="archived-badge")] == ["Archived"]

    def test_earlier_versions_of_a_message_are_not_searched(self, alice_client, library):
        assert hits(results_page(alice_client, "cactus need")) == []
        assert len(hits(results_page(alice_client, "orchids"))) == 1

    def test_an_empty_query_shows_the_form_and_no_results(self, alice_client, library):
        page = results_page(alice_client, "   ")

        assert hits(page) == []
        assert page.by_id("search-input").attrs["value"] == ""

    def test_a_query_with_no_match_says_so(self, alice_client, library):
        page = results_page(alice_client, "tulips")

        assert "Nothing matches “tulips”." in page.by_id("search-results").text()

    def test_htmx_gets_the_results_alone_and_the_sidebar_a_link_to_all(
        self, alice_client, make_conversation
    ):
        make_conversation(history=[("user", f"fern number {n}") for n in range(25)])

        alone = alice_client.get(reverse("search"), {"q": "fern"}, headers=HTMX).content.decode()
        compact = alice_client.get(
            reverse("search"), {"q": "fern", "in": "sidebar"}, headers=HTMX
        ).content.decode()

        assert alone.lstrip().startswith('<div id="search-results"')
        assert "<html" not in alone
        assert 'href="/search/?q=fern">All results</a>' in compact

    def test_results_are_paginated(self, alice_client, make_conversation):
        make_conversation(history=[("user", f"fern number {n}") for n in range(25)])

        first = results_page(alice_client, "fern")
        second = results_page(alice_client, "fern", page=2)

        assert len(hits(first)) == search.RESULTS_PER_PAGE
        assert len(hits(second)) == 25 - search.RESULTS_PER_PAGE
        shown = [
            a.attrs["href"] for p in (first, second) for a in p.all(class_name="search-hit-link")
        ]
        assert len(set(shown)) == 25
        assert "Page 1 of 2" in first.by_id("search-results").text()


@pytest.mark.django_db
@only_on_the_fallback
class TestFallbackSearch:
    def test_every_word_must_appear_in_any_case(self, alice_client, library):
        both = results_page(alice_client, "WATER Fern")
        one = results_page(alice_client, "water tulip")

        assert len(hits(both)) == 2
        assert hits(one) == []

    def test_the_snippet_is_cut_around_the_match_with_every_match_marked(
        self, alice_client, make_conversation
    ):
        long_text = (
            "Lorem ipsum dolor sit amet. " * 30 + "The FERN likes shade; ferns " + "x " * 200
        )
        make_conversation(history=[("user", long_text)])

        [snippet] = snippets(results_page(alice_client, "fern"))

        text = snippet.text()
        assert text.startswith("…") and text.endswith("…")
        assert len(text) <= search.SNIPPET_CHARS + 2
        assert marked_texts(snippet) == ["FERN", "fern"]
        assert markup_other_than_marks(snippet) == []


@pytest.mark.django_db
@only_on_postgresql
class TestFullTextSearch:
    def test_words_match_their_forms_and_the_best_match_ranks_first(
        self, alice_client, make_conversation
    ):
        passing = make_conversation(
            title="Garden",
            history=[("user", "A fern, by the way, among the roses and tulips in the garden.")],
        )
        focused = make_conversation(
            title="Houseplants", history=[("user", "Watering ferns: ferns love watered soil.")]
        )

        page = results_page(alice_client, "watering fern")
        links = [a.attrs["href"] for a in page.all(class_name="search-hit-link")]

        assert len(links) == 1 and str(focused.pk) in links[0]
        ranked = [a.attrs["href"] for a in results_page(alice_client, "fern").all("a")]
        ranked = [href for href in ranked if "?message=" in href]
        assert [str(focused.pk) in ranked[0], str(passing.pk) in ranked[1]] == [True, True]

    def test_web_search_syntax_phrases_and_exclusions(self, alice_client, make_conversation):
        make_conversation(history=[("user", "The red fern grows slowly.")])
        make_conversation(history=[("user", "A fern that is red.")])

        assert len(hits(results_page(alice_client, '"red fern"'))) == 1
        assert len(hits(results_page(alice_client, "fern -slowly"))) == 1
        assert len(hits(results_page(alice_client, "fern or tulip"))) == 2

    def test_the_headline_marks_the_matches(self, alice_client, make_conversation):
        make_conversation(history=[("user", "Ferns like shade. " + "Other words here. " * 40)])

        [snippet] = snippets(results_page(alice_client, "fern"))

        assert marked_texts(snippet) == ["Ferns"]
        assert markup_other_than_marks(snippet) == []
        assert len(snippet.text()) < 400

    def test_the_message_search_can_read_the_gin_index(self, make_conversation, bob):
        """The index is built on the stored vector the search matches messages with.

        Whether the planner picks it for one query depends on the statistics of the moment (for
        one user with a single conversation, the conversation's own index may win), so the test
        asks for the matching alone, over everyone's messages, without the sequential scan, once
        the new entries have left the index's pending list (as autovacuum would move them).
        """
        words = "water light soil garden river coffee bread music train ticket".split()
        for owner in (None, bob):
            make_conversation(
                owner=owner,
                history=[
                    ("user", " ".join(words[(n + k) % 10] for k in range(20))) for n in range(300)
                ]
                + [("user", "a rare fern")],
            )
        _, matching = search._full_text(
            Conversation.objects.all(), Message.objects.filter(superseded_by__isnull=True), "fern"
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT gin_clean_pending_list('message_search_document')")
            cursor.execute("ANALYZE conversations_message")
            cursor.execute("SET LOCAL enable_seqscan = off")
            sql, params = matching.query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())

        assert "Bitmap Index Scan on message_search_document" in plan
        assert "to_tsvector" not in plan  # matched and ranked without parsing any text again
        assert [message.content for message in matching] == ["a rare fern", "a rare fern"]


def stored_vector_is_current(message: Message) -> bool | None:
    """On PostgreSQL, whether the message's stored search vector is that of its text now (None
    while it has none); elsewhere None, as nothing is stored."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT search_document = to_tsvector(%s, content) FROM conversations_message "
            "WHERE id = %s",
            [search.SEARCH_CONFIG, message.pk],
        )
        return cursor.fetchone()[0]


def linked_messages(document: Element) -> list[Message]:
    links = [a.attrs["href"] for a in document.all("a", class_name="search-hit-link")]
    return [Message.objects.get(pk=link.rsplit("#message-", 1)[1]) for link in links]


async def found_messages(client, query: str) -> list[str]:
    """The links of the message hits a search shows."""
    response = await client.get(reverse("search"), {"q": query})
    assert response.status_code == 200
    page = parse(response.content.decode())
    return [a.attrs["href"] for a in page.all("a", class_name="search-hit-link")]


async def latest_reply(conversation: Conversation) -> Message:
    current = Message.objects.filter(conversation=conversation, superseded_by__isnull=True)
    return await current.filter(role="assistant").order_by("-created_at").afirst()


@pytest.mark.django_db(transaction=True)
class TestSearchKeepsUpWithWriting:
    """What is searched is what the conversation says now: each message as soon as it is
    stored, a reply once it has finished, edited and regenerated ones by their new text only,
    and only the owner's. On PostgreSQL the stored vector is checked against the text too."""

    def test_a_message_is_found_by_its_owner_as_soon_as_it_is_written_or_changed(
        self, alice_client, bob_client, make_conversation, bob
    ):
        conversation = make_conversation(history=[("user", "Which bromeliads flower indoors?")])
        bobs = make_conversation(owner=bob, history=[("user", "Bob's bromeliads are tall.")])
        message = conversation.messages.get()

        assert linked_messages(results_page(alice_client, "bromeliads")) == [message]
        assert linked_messages(results_page(bob_client, "bromeliads")) == [bobs.messages.get()]
        message.content = "Which orchids flower indoors?"
        message.save(update_fields=["content"])

        assert hits(results_page(alice_client, "bromeliads")) == []
        assert len(hits(results_page(alice_client, "orchids"))) == 1
        assert stored_vector_is_current(message) in (True, None)

    @pytest.mark.asyncio
    async def test_a_streaming_reply_is_found_once_it_has_finished(
        self, conversation, alice_async_client, fake_openai: FakeOpenAI
    ):
        words = "Bromeliads " + "grow slowly in bright shade " * 8
        fake_openai.script(Reply(text=words, delay=0.03))

        await alice_async_client.post(
            f"/c/{conversation.pk}/messages/", {"text": "Tell me about epiphytes"}
        )
        reply = await latest_reply(conversation)
        for _ in range(200):
            await reply.arefresh_from_db()
            if reply.content.startswith("Bromeliads") and reply.is_streaming:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the reply's text was not stored while it streamed")
        while_streaming = await found_messages(alice_async_client, "bromeliads")
        vector_while_streaming = await sync_to_async(stored_vector_is_current)(reply)
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()

        assert while_streaming == []
        assert vector_while_streaming is None
        assert reply.status == Message.Status.COMPLETE
        assert await found_messages(alice_async_client, "bromeliads") == [
            f"/c/{conversation.pk}/?message={reply.pk}#message-{reply.pk}"
        ]
        assert len(await found_messages(alice_async_client, "epiphytes")) == 1
        assert await sync_to_async(stored_vector_is_current)(reply) in (True, None)

    @pytest.mark.asyncio
    async def test_regenerated_and_edited_messages_are_found_by_their_new_text_only(
        self, conversation, alice_async_client, fake_openai: FakeOpenAI
    ):
        fake_openai.script(Reply(text="Try Porto instead."), Reply(text="Norway, for fjords."))
        question = await conversation.messages.aget(role="user")

        await alice_async_client.post(f"/c/{conversation.pk}/regenerate/")
        await wait_for_reply((await latest_reply(conversation)).pk)
        after_regenerating = [
            len(await found_messages(alice_async_client, word)) for word in ("lisbon", "porto")
        ]
        await alice_async_client.post(
            f"/c/{conversation.pk}/messages/{question.pk}/edit/",
            {"text": "Where should I go hiking in June?"},
        )
        reply = await latest_reply(conversation)
        await wait_for_reply(reply.pk)

        assert after_regenerating == [0, 1]
        assert await found_messages(alice_async_client, "porto") == []
        assert len(await found_messages(alice_async_client, "hiking")) == 1
        assert len(await found_messages(alice_async_client, "fjords")) == 1
        assert await found_messages(alice_async_client, "may") == []


@pytest.mark.django_db
def test_a_search_result_opens_the_chat_at_that_message_even_when_it_is_old(
    alice_client, make_conversation, settings
):
    settings.CHAT_PAGE_MESSAGES = 10
    conversation = make_conversation(
        history=[("user" if n % 2 == 0 else "assistant", f"message {n}") for n in range(40)]
    )
    target = conversation.messages.get(content="message 5")
    older = conversation.messages.get(content="message 2")

    page = alice_client.get(conversation.get_absolute_url(), {"message": target.pk})
    plain = alice_client.get(conversation.get_absolute_url())

    html = page.content.decode()
    assert f'id="message-{target.pk}"' in html
    assert f'id="message-{older.pk}"' not in html
    assert html.count('<li id="message-') == 40 - 5 + 2
    assert "Show earlier messages" in html
    assert plain.content.decode().count('<li id="message-') == 10


@pytest.mark.django_db
def test_a_message_of_another_conversation_changes_nothing(
    alice_client, make_conversation, settings, bob
):
    settings.CHAT_PAGE_MESSAGES = 10
    conversation = make_conversation(history=[("user", f"message {n}") for n in range(40)])
    elsewhere = make_conversation(owner=bob, history=[("user", "Bob's")]).messages.get()

    for value in (elsewhere.pk, "not-a-uuid", ""):
        page = alice_client.get(conversation.get_absolute_url(), {"message": value})
        assert page.content.decode().count('<li id="message-') == 10


@pytest.mark.live
@pytest.mark.django_db
@pytest.mark.parametrize("name", PAYLOADS)
def test_hostile_titles_and_messages_stay_text_in_results_and_snippets(
    alice_client, make_conversation, name
):
    payload = PAYLOADS[name]
    make_conversation(
        title=f"zebra {payload}"[:200],
        history=[("user", f"zebra {payload} zebra"), ("assistant", f"{payload} zebra")],
    )

    for params, headers in [({}, {}), ({"in": "sidebar"}, HTMX)]:
        html = alice_client.get(
            reverse("search"), {"q": "zebra", **params}, headers=headers
        ).content.decode()
        assert executable_markup(html) == [], name
        page = parse(html)
        shown = [*snippets(page), *page.all(class_name="search-hit-title")]
        # PostgreSQL's parser may swallow the words after some markup: the reply that ends in
        # "zebra" is not always found there; the question that starts with it always is.
        assert len(snippets(page)) in (1, 2)
        for element in shown:
            assert markup_other_than_marks(element) == [], name
            assert {text.lower() for text in marked_texts(element)} <= {"zebra"}, name
        [title_hit] = page.all("a", class_name="search-hit-title")
        assert title_hit.text() == f"zebra {payload}"[:200], name
        written = " ".join(payload.split())[:100]
        assert any(written in snippet.text() for snippet in snippets(page)), name


@pytest.mark.django_db
def test_a_hostile_query_is_shown_as_text(alice_client, make_conversation):
    query = '"><script>alert(1)</script>'

    page = results_page(alice_client, query)

    assert page.by_id("search-input").attrs["value"] == query


@pytest.mark.django_db
def test_marker_characters_in_message_text_cannot_make_markup(alice_client, make_conversation):
    text = f"zebra {search.START_MARK}<b>bold</b>{search.STOP_MARK} <mark>fake</mark> zebra"
    make_conversation(history=[("user", text)])

    [snippet] = snippets(results_page(alice_client, "zebra"))

    assert markup_other_than_marks(snippet) == []
    assert "<b>bold</b>" in snippet.text()
    assert "<mark>fake</mark>" in snippet.text()


def test_snippet_parts_from_a_headline_split_on_the_markers_only() -> None:
    headline = f"a {search.START_MARK}fern{search.STOP_MARK} <b>&amp;</b>"

    parts = search.parts_between_marks(headline)

    assert parts == [search.Part("a "), search.Part("fern", True), search.Part(" <b>&amp;</b>")]


def test_the_fallback_snippet_starts_at_a_word_and_marks_overlapping_terms() -> None:
    text = "one two three " * 20 + "Fernando met a fern"
    pattern = search._terms_pattern("fern fernando")

    parts = search.snippet_around_match(text, pattern, width=60)

    assert parts[0] == search.Part("…")
    assert [p.text for p in parts if p.match] == ["Fernando", "fern"]
    assert parts[1].text[0] != " "
