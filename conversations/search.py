"""Searching a user's conversations: their titles and the text of their current messages.

On PostgreSQL this is full-text search (`websearch_to_tsquery`: words, "quoted phrases", -not,
or), ranked with ts_rank; ts_headline tells which words matched, and the snippet is cut around
them. Messages are matched and ranked on their stored vector, the column `search_document` of
migration 0004 with its GIN index `message_search_document`: the planner reads the index for a
rare word and the owner's own messages for a common one. Elsewhere (SQLite) every word must
appear, case-insensitively, and the snippet is cut around the first match.

A reply is searchable once it has finished: while it streams, its text changes every second.

Snippets come back as a list of `Part`s, plain text each, some of them marked as matches: the
template escapes every part and wraps the matches in <mark>, so text can never become markup.
ts_headline is asked to wrap matches in two private-use characters, not in HTML, and only the
words between them are used.
"""

import re
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.postgres.search import (
    SearchHeadline,
    SearchQuery,
    SearchRank,
    SearchVector,
    SearchVectorField,
)
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import Expression

from conversations.models import Conversation, Message

SEARCH_CONFIG = "english"
RESULTS_PER_PAGE = 20
TITLE_RESULTS = 10
MAX_QUERY_CHARS = 200
MAX_TERMS = 8
SNIPPET_CHARS = 180
START_MARK, STOP_MARK = "\ue000", "\ue001"


@dataclass(frozen=True)
class Part:
    text: str
    match: bool = False


@dataclass
class Results:
    query: str
    titles: list[Conversation]
    messages: Page | None


def uses_full_text() -> bool:
    return connection.vendor == "postgresql"


def search(owner_id: int, query: str, page_number: str | int | None = 1) -> Results:
    """The owner's conversations whose title matches (first page only) and a page of their
    current messages that match, archived conversations included. Each conversation carries
    `title_parts`, each message `snippet` (both lists of Parts)."""
    query = " ".join(query.split())[:MAX_QUERY_CHARS]
    if not query:
        return Results(query, [], None)
    conversations = Conversation.objects.filter(owner_id=owner_id)
    messages = (
        Message.objects.filter(conversation__owner_id=owner_id, superseded_by__isnull=True)
        .exclude(content="")
        .exclude(status=Message.Status.STREAMING)
        .select_related("conversation")
        .defer("metadata", "conversation__metadata")
    )
    if uses_full_text():
        titles, messages = _full_text(conversations, messages, query)
    else:
        titles, messages = _contains(conversations, messages, query)
    page = Paginator(messages, RESULTS_PER_PAGE).get_page(page_number)
    title_hits = list(titles[:TITLE_RESULTS]) if page.number == 1 else []
    if uses_full_text():
        for conversation in title_hits:
            pattern = _words_pattern(matched_words(conversation.headline))
            conversation.title_parts = marked(conversation.display_title, pattern)
        for message in page:
            pattern = _words_pattern(matched_words(message.headline))
            message.snippet = snippet_around_match(message.content, pattern)
    else:
        pattern = _terms_pattern(query)
        for conversation in title_hits:
            conversation.title_parts = marked(conversation.display_title, pattern)
        for message in page:
            message.snippet = snippet_around_match(message.content, pattern)
    for message in page:
        message.link = message_link(message)
    return Results(query, title_hits, page)


class StoredSearchDocument(Expression):
    """A message's `search_document`: to_tsvector(SEARCH_CONFIG, content) once it has finished,
    kept by PostgreSQL (migration 0004). A column of the table, not a field of the model, so
    that no query but the search's reads it."""

    output_field = SearchVectorField()

    def as_sql(self, compiler, connection) -> tuple[str, list]:
        table = compiler.quote_name_unless_alias(compiler.query.get_initial_alias())
        return f"{table}.{connection.ops.quote_name('search_document')}", []


def _full_text(
    conversations: QuerySet, messages: QuerySet, query: str
) -> tuple[QuerySet, QuerySet]:
    search_query = SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)
    content = StoredSearchDocument()
    title = SearchVector("title", config=SEARCH_CONFIG)
    marks = {"start_sel": START_MARK, "stop_sel": STOP_MARK, "config": SEARCH_CONFIG}
    titles = (
        conversations.annotate(document=title)
        .filter(document=search_query)
        .annotate(
            rank=SearchRank(title, search_query),
            headline=SearchHeadline("title", search_query, highlight_all=True, **marks),
        )
        .order_by("-rank", "-updated_at")
    )
    messages = (
        messages.annotate(document=content)
        .filter(document=search_query)
        .annotate(
            rank=SearchRank(content, search_query),
            headline=SearchHeadline(
                "content",
                search_query,
                max_words=30,
                min_words=12,
                max_fragments=2,
                fragment_delimiter=" … ",
                **marks,
            ),
        )
        .order_by("-rank", "-created_at", "-id")
    )
    return titles, messages


def _contains(conversations: QuerySet, messages: QuerySet, query: str) -> tuple[QuerySet, QuerySet]:
    terms = query.split()[:MAX_TERMS]
    in_title = Q()
    in_content = Q()
    for term in terms:
        in_title &= Q(title__icontains=term)
        in_content &= Q(content__icontains=term)
    titles = conversations.filter(in_title).order_by("-updated_at", "-id")
    messages = messages.filter(in_content).order_by("-created_at", "-id")
    return titles, messages


def _terms_pattern(query: str) -> re.Pattern:
    terms = sorted(set(query.split()[:MAX_TERMS]), key=len, reverse=True)
    return re.compile("|".join(re.escape(term) for term in terms), re.IGNORECASE)


def marked(text: str, pattern: re.Pattern) -> list[Part]:
    """`text` cut into plain parts and the parts `pattern` matches."""
    parts = []
    position = 0
    for found in pattern.finditer(text):
        if found.start() > position:
            parts.append(Part(text[position : found.start()]))
        if found.end() > found.start():
            parts.append(Part(found.group(), match=True))
        position = max(position, found.end())
    if position < len(text):
        parts.append(Part(text[position:]))
    return parts


def snippet_around_match(text: str, pattern: re.Pattern, width: int = SNIPPET_CHARS) -> list[Part]:
    """About `width` characters of `text` around its first match, matches marked."""
    text = " ".join(text.split())
    found = pattern.search(text)
    start = max(0, (found.start() if found else 0) - width // 3)
    end = min(len(text), start + width)
    if start > 0:
        space = text.find(" ", start, start + 20)
        start = space + 1 if space != -1 and (not found or space < found.start()) else start
    parts = marked(text[start:end], pattern)
    if start > 0:
        parts.insert(0, Part("…"))
    if end < len(text):
        parts.append(Part("…"))
    return parts


def matched_words(headline: str) -> set[str]:
    """The words ts_headline marked: those of the text that matched the query, in whatever
    form (a search for "watering" marks "watered"). The snippet itself is cut from the text
    as written, since ts_headline drops anything its parser takes for an HTML tag."""
    return {part.text for part in parts_between_marks(headline) if part.match and part.text}


def _words_pattern(words: set[str]) -> re.Pattern:
    if not words:
        return re.compile(r"(?!)")  # matches nothing
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def parts_between_marks(headline: str) -> list[Part]:
    """ts_headline's output, its START_MARK…STOP_MARK spans as matches."""
    parts = []
    for piece in re.split(f"({START_MARK}.*?{STOP_MARK})", headline or "", flags=re.S):
        if piece.startswith(START_MARK) and piece.endswith(STOP_MARK):
            parts.append(Part(piece[1:-1], match=True))
        elif piece:
            parts.append(Part(piece.replace(START_MARK, "").replace(STOP_MARK, "")))
    return parts


def message_link(message: Message) -> str:
    """The chat page scrolled to this message, which it includes even when it is old."""
    url = message.conversation.get_absolute_url()
    return f"{url}?message={message.pk}#message-{message.pk}"


def messages_to_show(conversation: Conversation, target: str | None) -> int:
    """How many of the newest messages the chat page shows: its usual number, or as many as
    it takes to reach `target` (a current message of the conversation) and two before it."""
    usual = settings.CHAT_PAGE_MESSAGES
    try:
        target_id = uuid.UUID(target or "")
    except ValueError:
        return usual
    current = conversation.messages.filter(superseded_by__isnull=True)
    found = current.filter(pk=target_id).values_list("created_at", flat=True).first()
    if found is None:
        return usual
    return max(usual, current.filter(created_at__gte=found).count() + 2)
