"""Token usage: a user's own page (by day and model, as a chart and a table) and the admin's
totals per user and per model. Every figure is checked against the replies stored here."""

import re
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import User
from conversations import usage
from conversations.models import Conversation, Message, UsageEntry
from tests.support.ledger import paid_reply
from tests.support.usage import tokens_used_on
from tests.support.visitors import PASSWORD

MODEL_A = "gpt-4o-mini"
MODEL_B = "llama3.2"


def add_reply(
    conversation: Conversation,
    day: date,
    *,
    model: str,
    prompt: int,
    completion: int,
    hour: int = 12,
    **fields,
) -> Message:
    """A reply the model wrote at `hour` o'clock on `day` (in TIME_ZONE), with its usage."""
    at = usage.start_of_day(day) + timedelta(hours=hour)
    return paid_reply(
        conversation, model=model, prompt=prompt, completion=completion, created_at=at, **fields
    )


def tokens(replies: list[Message]) -> int:
    return sum(reply.usage["total_tokens"] for reply in replies)


@pytest.fixture
def history(alice: User, bob: User, make_conversation) -> dict[str, list[Message]]:
    """Alice's replies over a month, two models, one regenerated; Bob's replies; and replies
    too old to count."""
    today = usage.today()
    trip = make_conversation(title="Trip")
    work = make_conversation(title="Work")
    replaced = add_reply(trip, today, model=MODEL_A, prompt=40, completion=2, hour=0)
    latest = add_reply(trip, today, model=MODEL_A, prompt=120, completion=30, hour=0)
    replaced.superseded_by = latest
    replaced.save(update_fields=["superseded_by"])
    alice_replies = [
        replaced,
        latest,
        add_reply(work, today, model=MODEL_B, prompt=7, completion=3, hour=0),
        add_reply(trip, today - timedelta(days=3), model=MODEL_A, prompt=900, completion=450),
        add_reply(work, today - timedelta(days=3), model=MODEL_B, prompt=60, completion=20),
        add_reply(work, today - timedelta(days=29), model=MODEL_B, prompt=5, completion=5, hour=0),
    ]
    # A reply still streaming has only reserved an estimate: it counts as a reply, and its
    # tokens once it has finished.
    streaming = Message.objects.create(
        conversation=trip,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        created_at=usage.start_of_day(today),
        metadata={"model": MODEL_A},
    )
    UsageEntry.objects.create(
        user=alice,
        created_at=streaming.created_at,
        model=MODEL_A,
        prompt_tokens=100,
        completion_tokens=1024,
        total_tokens=1124,
        reply_id=streaming.pk,
        message=streaming,
    )
    too_old = add_reply(trip, today - timedelta(days=30), model=MODEL_A, prompt=5000, completion=1)
    bobs = make_conversation(owner=bob, title="Bob's")
    bob_replies = [
        add_reply(bobs, today, model=MODEL_A, prompt=7000, completion=700),
        add_reply(bobs, today - timedelta(days=1), model="bob-only-model", prompt=1, completion=1),
    ]
    return {
        "alice": alice_replies,
        "streaming": [streaming],
        "too_old": [too_old],
        "bob": bob_replies,
    }


@pytest.mark.django_db
class TestUsageReport:
    def test_it_adds_up_each_day_and_model_of_the_users_own_last_30_days(
        self, alice: User, history
    ):
        report = usage.usage_report(alice.pk)

        replies = history["alice"]
        today = usage.today()
        assert len(report.days) == 30
        assert (report.days[0], report.days[-1]) == (today - timedelta(days=29), today)
        for day in report.days:
            for model in (MODEL_A, MODEL_B):
                on_day = [
                    r
                    for r in replies
                    if r.metadata["model"] == model and r.created_at.date() == day
                ]
                cell = report.cells.get((day, model))
                assert (cell.total_tokens if cell else 0) == tokens(on_day), (day, model)
        assert report.total.total_tokens == tokens(replies)
        assert report.total.prompt_tokens == sum(r.usage["prompt_tokens"] for r in replies)
        assert report.total.completion_tokens == sum(r.usage["completion_tokens"] for r in replies)
        assert report.total.replies == len(replies) + len(history["streaming"])
        assert report.today.total_tokens == tokens(
            [r for r in replies if r.created_at.date() == today]
        )
        assert report.models == [MODEL_A, MODEL_B]  # the most used first
        assert "bob-only-model" not in report.by_model

    def test_a_day_is_a_calendar_day_in_the_sites_time_zone(
        self, alice: User, conversation, settings
    ):
        settings.TIME_ZONE = "Pacific/Auckland"
        today = usage.today()
        # 23:30 the day before, in Auckland: yesterday there, whatever the day in UTC.
        late = add_reply(conversation, today, model=MODEL_A, prompt=10, completion=1, hour=-1)
        early = add_reply(conversation, today, model=MODEL_A, prompt=20, completion=2, hour=0)

        report = usage.usage_report(alice.pk)

        assert report.by_day[today - timedelta(days=1)].total_tokens == tokens([late])
        assert report.today.total_tokens == tokens([early])
        assert tokens_used_on(alice.pk, today) == tokens([early])

    def test_the_number_of_queries_does_not_grow_with_the_replies(
        self, alice: User, alice_client: Client, make_conversation
    ):
        conversation = make_conversation()
        add_reply(conversation, usage.today(), model=MODEL_A, prompt=1, completion=1, hour=0)
        with CaptureQueriesContext(connection) as few:
            alice_client.get(reverse("usage"))
        for days_ago in range(30):
            for model in (MODEL_A, MODEL_B, "a third model"):
                day = usage.today() - timedelta(days=days_ago)
                add_reply(conversation, day, model=model, prompt=3, completion=4, hour=0)
        with CaptureQueriesContext(connection) as many:
            response = alice_client.get(reverse("usage"))

        assert response.status_code == 200
        assert len(many) == len(few)


def table_rows(page: str, table_id: str) -> dict[str, list[str]]:
    """The rows of a table on the page: first cell -> the other cells, as text."""
    table = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        cells = [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.django_db
class TestUsagePage:
    def test_it_shows_the_users_own_usage_as_a_chart_and_a_table(
        self, alice: User, alice_client: Client, history
    ):
        response = alice_client.get(reverse("usage"))

        page = response.content.decode()
        assert response.status_code == 200
        replies = history["alice"]
        total = tokens(replies)
        assert f"<strong>{total:,}</strong> tokens in {len(replies) + 1} replies" in page
        # The chart: drawn on the server, a legend, a tooltip on every bar segment.
        assert '<svg id="usage-chart"' in page
        assert "<script" not in page.split('<svg id="usage-chart"', 1)[1].split("</svg>", 1)[0]
        three_days_ago = usage.today() - timedelta(days=3)
        on_that_day = [r for r in replies if r.created_at.date() == three_days_ago]
        for model in (MODEL_A, MODEL_B):
            used = tokens([r for r in on_that_day if r.metadata["model"] == model])
            short_day = f"{three_days_ago:%a} {three_days_ago.day} {three_days_ago:%b}"
            assert f"{short_day}, {model}: {used:,} tokens</title>" in page
        legend = page.split('id="usage-legend"', 1)[1].split("</ul>", 1)[0]
        assert MODEL_A in legend and MODEL_B in legend
        # The same figures as a table, for those who cannot see the chart.
        rows = table_rows(page, "usage-table")
        header = rows.pop("Day")
        assert header == [MODEL_A, MODEL_B, "Total", "Replies"]
        assert len(rows) == 30
        day_label = f"{three_days_ago:%a} {three_days_ago.day} {three_days_ago:%b %Y}"
        assert rows[day_label][2] == f"{tokens(on_that_day):,}"
        by_model = table_rows(page, "usage-models")
        assert (
            by_model[MODEL_B][-1]
            == f"{tokens([r for r in replies if r.metadata['model'] == MODEL_B]):,}"
        )
        assert by_model["All models"][-1] == f"{total:,}"

    def test_it_shows_nothing_of_another_users_usage(self, bob_client: Client, alice, history):
        response = bob_client.get(reverse("usage"))

        page = response.content.decode()
        bobs = history["bob"]
        assert f"<strong>{tokens(bobs):,}</strong> tokens in {len(bobs)} replies" in page
        assert MODEL_B not in page
        assert "bob-only-model" in page

    def test_a_user_with_no_replies_sees_an_empty_period(self, bob_client: Client):
        response = bob_client.get(reverse("usage"))

        page = response.content.decode()
        assert response.status_code == 200
        assert "No replies in this period yet." in page
        assert "You have no daily limit." in page

    def test_anonymous_visitors_are_sent_to_sign_in(self, client: Client):
        response = client.get(reverse("usage"))

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))


@pytest.mark.django_db
class TestAdminTotals:
    @pytest.fixture
    def staff_client(self) -> Client:
        client = Client()
        client.force_login(
            User.objects.create_user("ops@example.com", PASSWORD, is_staff=True, is_superuser=True)
        )
        return client

    def test_staff_see_tokens_and_replies_per_user_and_per_model(
        self, staff_client: Client, alice: User, bob: User, history
    ):
        response = staff_client.get(reverse("admin:conversations_message_usage"))

        page = response.content.decode()
        assert response.status_code == 200
        in_period = history["alice"] + history["bob"]  # the last 30 days, by default
        by_user = table_rows(page, "usage-by-user")
        assert by_user[alice.email] == [
            str(len(history["alice"]) + 1),  # the streaming reply counts, with no tokens
            str(sum(r.usage["prompt_tokens"] for r in history["alice"])),
            str(sum(r.usage["completion_tokens"] for r in history["alice"])),
            str(tokens(history["alice"])),
        ]
        assert by_user[bob.email][-1] == str(tokens(history["bob"]))
        by_model = table_rows(page, "usage-by-model")
        for model in (MODEL_A, MODEL_B, "bob-only-model"):
            of_model = [r for r in in_period if r.metadata["model"] == model]
            assert by_model[model][-1] == str(tokens(of_model)), model
        # Staff find the page from the messages' list.
        changelist = staff_client.get(reverse("admin:conversations_message_changelist"))
        assert reverse("admin:conversations_message_usage") in changelist.content.decode()

    def test_the_period_can_be_chosen(self, staff_client: Client, alice: User, history):
        today = usage.today()
        all_time = staff_client.get(
            reverse("admin:conversations_message_usage"), {"since": "", "until": ""}
        )
        only_today = staff_client.get(
            reverse("admin:conversations_message_usage"),
            {"since": today.isoformat(), "until": today.isoformat()},
        )

        everything = history["alice"] + history["too_old"]
        assert table_rows(all_time.content.decode(), "usage-by-user")[alice.email][-1] == str(
            tokens(everything)
        )
        todays = [r for r in history["alice"] if r.created_at.date() == today]
        assert table_rows(only_today.content.decode(), "usage-by-user")[alice.email][-1] == str(
            tokens(todays)
        )

    def test_staff_read_the_ledger_entry_by_entry_but_cannot_change_it(
        self, staff_client: Client, alice: User, history
    ):
        entry = UsageEntry.objects.get(reply_id=history["alice"][1].pk)
        entry.conversation.delete()  # the ledger keeps what a deleted conversation cost

        listing = staff_client.get(reverse("admin:conversations_usageentry_changelist"))
        detail = staff_client.get(reverse("admin:conversations_usageentry_change", args=[entry.pk]))

        page = listing.content.decode()
        assert listing.status_code == 200
        assert f"{UsageEntry.objects.count()} usage entries" in page
        assert alice.email in page and MODEL_B in page
        assert detail.status_code == 200
        assert 'name="total_tokens"' not in detail.content.decode()  # read only
        assert (
            staff_client.post(
                reverse("admin:conversations_usageentry_delete", args=[entry.pk]), {"post": "yes"}
            ).status_code
            == 403
        )
        assert UsageEntry.objects.filter(pk=entry.pk).exists()

    def test_it_is_for_staff_only(self, alice_client: Client, client: Client):
        url = reverse("admin:conversations_message_usage")

        for visitor in (alice_client, client):
            response = visitor.get(url)
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("admin:login"))
