"""Long conversations and busy users: pages stay small and their query count stays flat."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import rendering
from conversations.models import Conversation

pytestmark = pytest.mark.django_db


def numbered_history(count: int) -> list[tuple[str, str]]:
    return [("user" if n % 2 == 0 else "assistant", f"Message number {n}.") for n in range(count)]


def shown_numbers(html: str) -> list[int]:
    # In the message bodies; each Copy button holds its message's text too.
    return [int(n) for n in re.findall(r"<p>Message number (\d+)\.</p>", html)]


def test_a_long_conversation_shows_its_newest_messages_and_loads_older_on_demand(
    settings, make_conversation, alice_client
):
    settings.CHAT_PAGE_MESSAGES = 5
    conversation = make_conversation(history=numbered_history(12))

    page = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert shown_numbers(page) == [7, 8, 9, 10, 11]
    button = re.search(r'hx-get="([^"]+)"[^>]*>Show earlier messages', page)
    assert button

    earlier = alice_client.get(button[1].replace("&amp;", "&")).content.decode()
    assert shown_numbers(earlier) == [2, 3, 4, 5, 6]
    oldest_link = re.search(r'hx-get="([^"]+)"[^>]*>Show earlier messages', earlier)
    oldest = alice_client.get(oldest_link[1].replace("&amp;", "&")).content.decode()
    assert shown_numbers(oldest) == [0, 1]
    assert "Show earlier messages" not in oldest


def test_earlier_messages_are_private_and_need_a_real_message(
    make_conversation, alice_client, bob_client
):
    conversation = make_conversation(history=numbered_history(4))
    last = conversation.messages.order_by("created_at").last()
    url = f"/c/{conversation.pk}/earlier/"

    assert bob_client.get(url, {"before": last.pk}).status_code == 404
    assert alice_client.get(url, {"before": "not-a-uuid"}).status_code == 404
    assert alice_client.get(url).status_code == 404
    assert alice_client.get(url, {"before": last.pk}).status_code == 200


@pytest.mark.parametrize("page", ["/", "conversation"])
def test_the_query_count_does_not_grow_with_conversations_or_messages(
    page, settings, make_conversation, alice_client, alice
):
    settings.CHAT_PAGE_MESSAGES = 20

    def count_queries() -> int:
        target = make_conversation(history=numbered_history(30)) if page != "/" else None
        path = target.get_absolute_url() if target else "/"
        with CaptureQueriesContext(connection) as queries:
            assert alice_client.get(path).status_code == 200
        return len(queries)

    small = count_queries()
    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(owner=alice, title=f"Old {n}", updated_at=now - timedelta(days=n))
            for n in range(200)
        ]
    )
    large = count_queries()
    assert large == small


def test_rendered_markdown_of_finished_messages_comes_from_the_cache(
    make_conversation, alice_client, monkeypatch
):
    conversation = make_conversation(
        history=[("user", "Show me **bold**"), ("assistant", "Here: **bold** and `code`.")]
    )
    cache.clear()  # with Redis, earlier runs may have rendered these very texts
    renders = []
    real_render = rendering.render_markdown
    monkeypatch.setattr(
        rendering, "render_markdown", lambda text: renders.append(text) or real_render(text)
    )

    first = alice_client.get(conversation.get_absolute_url()).content.decode()
    rendered_first = len(renders)
    first_bodies = re.findall(r'<div class="message-body markdown">.*?</div>', first, re.S)
    second = alice_client.get(conversation.get_absolute_url()).content.decode()

    assert rendered_first == 2
    assert len(renders) == rendered_first
    assert "<strong>bold</strong>" in second and "<code>code</code>" in second
    assert re.findall(r'<div class="message-body markdown">.*?</div>', second, re.S) == first_bodies
