"""Managing conversations: rename, pin, archive, delete, and the sidebar that lists them
(Pinned, Today, Previous 7 days, Older; paged with a keyset cursor, loaded as it scrolls)."""

import asyncio
import logging
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations import sidebar
from conversations.models import TITLE_MAX_LENGTH, Conversation, Message
from conversations.replies import generate, running
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.replies import wait_for_reply
from tests.support.sockets import open_home_socket
from tests.support.xss import PAYLOADS, executable_markup, foreign_markup_in_user_content, parse

HTMX = {"HX-Request": "true"}


def listed_ids(html: str) -> list[str]:
    return re.findall(r'<li id="conversation-([0-9a-f-]+)"', html)


def group_headings(html: str) -> list[str]:
    return re.findall(r'<h2 class="conversation-group-title">([^<]+)</h2>', html)


def more_link(html: str) -> str | None:
    found = re.search(r'<li id="conversation-list-more".*?href="([^"]+)"', html, re.S)
    return found[1].replace("&amp;", "&") if found else None


def sidebar_of(page: str) -> str:
    return page.split('id="conversation-list"', 1)[1].split("</ul>", 1)[0]


def snapshot(conversation: Conversation) -> tuple:
    row = Conversation.objects.filter(pk=conversation.pk).values_list().first()
    return row, list(Message.objects.filter(conversation=conversation.pk).values_list())


# --------------------------------------------------------------------------- #
# Rename
# --------------------------------------------------------------------------- #


@pytest.mark.django_db
class TestRename:
    def test_the_header_title_turns_into_a_form_and_back(self, alice_client, conversation):
        url = reverse("conversation_rename", args=[conversation.pk])

        form = alice_client.get(url, {"in": "header"}, headers=HTMX).content.decode()
        label = alice_client.get(
            reverse("conversation_label", args=[conversation.pk]), {"in": "header"}, headers=HTMX
        ).content.decode()

        document = parse(form)
        title_input = next(i for i in document.all("input") if i.attrs.get("name") == "title")
        assert title_input.attrs["value"] == "Trip planning"
        assert document.by_id("conversation-heading").all("form")[0].attrs["hx-post"] == url
        assert '<h1 id="conversation-title">Trip planning</h1>' in label

    def test_the_owner_renames_from_the_header_and_the_model_no_longer_names_it(
        self, alice_client, conversation
    ):
        response = alice_client.post(
            reverse("conversation_rename", args=[conversation.pk]),
            {"title": "  Lisbon   in May ", "in": "header"},
            headers=HTMX,
        )

        conversation.refresh_from_db()
        assert conversation.title == "Lisbon in May"
        assert conversation.metadata["title_source"] == "user"
        assert '<h1 id="conversation-title">Lisbon in May</h1>' in response.content.decode()

    def test_renaming_from_the_sidebar_answers_with_the_sidebar_item(
        self, alice_client, conversation
    ):
        response = alice_client.post(
            reverse("conversation_rename", args=[conversation.pk]),
            {"title": "Spring trip", "in": "sidebar"},
            headers=HTMX,
        )

        item = parse(response.content.decode()).by_id(f"conversation-{conversation.pk}")
        assert item.tag == "li"
        assert item.all("a")[0].text() == "Spring trip"

    def test_without_htmx_the_form_is_a_page_and_saving_goes_back_to_the_chat(
        self, alice_client, conversation
    ):
        url = reverse("conversation_rename", args=[conversation.pk])

        page = alice_client.get(url)
        saved = alice_client.post(url, {"title": "Plain form"})

        assert page.status_code == 200
        assert "Rename the conversation" in page.content.decode()
        assert saved.status_code == 302
        assert saved["Location"] == conversation.get_absolute_url()
        conversation.refresh_from_db()
        assert conversation.title == "Plain form"

    @pytest.mark.parametrize(
        ("title", "reason"),
        [
            ("", "Give the conversation a name."),
            ("   \n ", "Give the conversation a name."),
            ("x" * (TITLE_MAX_LENGTH + 1), f"at most {TITLE_MAX_LENGTH} characters"),
        ],
    )
    def test_an_empty_or_overlong_title_is_refused_with_the_reason(
        self, alice_client, conversation, title, reason
    ):
        response = alice_client.post(
            reverse("conversation_rename", args=[conversation.pk]),
            {"title": title, "in": "header"},
            headers=HTMX,
        )

        page = response.content.decode()
        assert response.status_code == 200
        assert reason in page
        assert 'role="alert"' in page and 'aria-invalid="true"' in page
        conversation.refresh_from_db()
        assert conversation.title == "Trip planning"

    def test_a_title_of_exactly_the_limit_is_kept_whole(self, alice_client, conversation):
        title = "é" * TITLE_MAX_LENGTH

        alice_client.post(reverse("conversation_rename", args=[conversation.pk]), {"title": title})

        conversation.refresh_from_db()
        assert conversation.title == title


# --------------------------------------------------------------------------- #
# Who may change what
# --------------------------------------------------------------------------- #


CHANGES = {
    "conversation_rename": {"title": "Taken over"},
    "conversation_pin": {},
    "conversation_unpin": {},
    "conversation_archive": {},
    "conversation_unarchive": {},
    "conversation_delete": {"confirm": "yes"},
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", CHANGES)
def test_another_user_is_told_the_conversation_does_not_exist_and_nothing_changes(
    bob_client, make_conversation, route
):
    conversation = make_conversation(title="Alice's", history=[("user", "Private words")])
    conversation.pinned_at = timezone.now()
    conversation.save(update_fields=["pinned_at"])
    before = snapshot(conversation)
    url = reverse(route, args=[conversation.pk])

    answers = [bob_client.post(url, CHANGES[route]), bob_client.get(url, headers=HTMX)]

    assert [answer.status_code for answer in answers] in ([404, 404], [404, 405])
    assert all("Alice" not in answer.content.decode() for answer in answers)
    assert snapshot(conversation) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", CHANGES)
def test_a_change_without_the_csrf_token_is_refused(alice, conversation, route):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.get(reverse("home"))
    before = snapshot(conversation)

    response = browser.post(reverse(route, args=[conversation.pk]), CHANGES[route])

    assert response.status_code == 403
    assert snapshot(conversation) == before


@pytest.mark.django_db
@pytest.mark.parametrize("route", CHANGES)
def test_anonymous_visitors_are_sent_to_sign_in(client, conversation, route):
    before = snapshot(conversation)

    response = client.post(reverse(route, args=[conversation.pk]), CHANGES[route])

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert snapshot(conversation) == before


# --------------------------------------------------------------------------- #
# Pin and archive
# --------------------------------------------------------------------------- #


@pytest.mark.django_db
class TestPinAndArchive:
    def test_a_pinned_conversation_heads_the_sidebar_under_pinned(
        self, alice_client, make_conversation
    ):
        now = timezone.now()
        old = make_conversation(title="Old but dear", updated_at=now - timedelta(days=30))
        new = make_conversation(title="Fresh", updated_at=now)

        response = alice_client.post(
            reverse("conversation_pin", args=[old.pk]), headers=HTMX
        ).content.decode()
        home = alice_client.get(reverse("home")).content.decode()

        for html in (response, sidebar_of(home)):
            assert listed_ids(html) == [str(old.pk), str(new.pk)]
            assert group_headings(html) == ["Pinned", "Today"]
        assert ">Unpin</button>" in response

        alice_client.post(reverse("conversation_unpin", args=[old.pk]), headers=HTMX)

        home = alice_client.get(reverse("home")).content.decode()
        assert listed_ids(sidebar_of(home)) == [str(new.pk), str(old.pk)]
        assert group_headings(sidebar_of(home)) == ["Today", "Older"]

    def test_pinned_conversations_are_listed_most_recently_pinned_first(
        self, alice_client, make_conversation
    ):
        first, second = make_conversation(title="first"), make_conversation(title="second")
        for conversation in (first, second):
            alice_client.post(reverse("conversation_pin", args=[conversation.pk]))

        page = sidebar.sidebar_page(first.owner_id)

        assert [item.pk for item in page.items] == [second.pk, first.pk]
        assert [item.group_heading for item in page.items] == ["Pinned", ""]

    def test_an_archived_conversation_leaves_the_sidebar_for_the_archive(
        self, alice_client, conversation
    ):
        alice_client.post(reverse("conversation_pin", args=[conversation.pk]))

        response = alice_client.post(reverse("conversation_archive", args=[conversation.pk]))

        assert response.status_code == 302
        conversation.refresh_from_db()
        assert conversation.archived_at is not None
        assert conversation.pinned_at is None
        home = alice_client.get(reverse("home")).content.decode()
        assert listed_ids(sidebar_of(home)) == []
        archive = parse(alice_client.get(reverse("archive")).content.decode())
        item = archive.by_id(f"archived-{conversation.pk}")
        assert item.all("a")[0].text() == "Trip planning"
        assert [b.text() for b in item.all("button")] == ["Unarchive"]
        # It stays a conversation of its own: open, readable, marked as archived.
        chat = alice_client.get(conversation.get_absolute_url()).content.decode()
        assert "Try <strong>Lisbon</strong>." in chat
        assert '<span class="archived-badge">Archived</span>' in chat

    def test_unarchiving_from_the_archive_page_brings_it_back_and_returns_there(
        self, alice_client, conversation
    ):
        alice_client.post(reverse("conversation_archive", args=[conversation.pk]))

        response = alice_client.post(
            reverse("conversation_unarchive", args=[conversation.pk]), {"next": "/archive/?page=1"}
        )

        assert response["Location"] == "/archive/?page=1"
        home = alice_client.get(reverse("home")).content.decode()
        assert listed_ids(sidebar_of(home)) == [str(conversation.pk)]
        archive = alice_client.get(reverse("archive")).content.decode()
        assert "Nothing archived" in archive

    def test_a_next_address_on_another_site_is_ignored(self, alice_client, conversation):
        response = alice_client.post(
            reverse("conversation_archive", args=[conversation.pk]),
            {"next": "https://evil.example/"},
        )

        assert response["Location"] == conversation.get_absolute_url()

    def test_the_archive_is_paginated_newest_archived_first(
        self, alice_client, make_conversation, alice
    ):
        now = timezone.now()
        for n in range(30):
            Conversation.objects.filter(pk=make_conversation(title=f"Archived {n}").pk).update(
                archived_at=now - timedelta(minutes=n)
            )
        make_conversation(owner=None, title="Still in the sidebar")

        first = alice_client.get(reverse("archive")).content.decode()
        second = alice_client.get(reverse("archive"), {"page": 2}).content.decode()

        titles = re.findall(r'<a href="/c/[^"]+/">(Archived \d+)</a>', first + second)
        assert titles == [f"Archived {n}" for n in range(30)]
        assert "Page 1 of 2" in first and 'rel="next"' in first
        assert "Still in the sidebar" not in first + second


# --------------------------------------------------------------------------- #
# Delete
# --------------------------------------------------------------------------- #


@pytest.mark.django_db(transaction=True)
class TestDelete:
    def test_deleting_asks_first_and_only_a_confirmed_post_deletes(
        self, alice_client, conversation
    ):
        url = reverse("conversation_delete", args=[conversation.pk])

        dialog = parse(alice_client.get(url, headers=HTMX).content.decode())
        page = alice_client.get(url)
        unconfirmed = alice_client.post(url, {})

        assert dialog.by_id("delete-dialog").tag == "dialog"
        assert dialog.all(class_name="delete-title")[0].text() == "Trip planning"
        assert page.status_code == 200 and "Delete this conversation?" in page.content.decode()
        assert unconfirmed.status_code == 200
        assert Conversation.objects.filter(pk=conversation.pk).exists()

        deleted = alice_client.post(url, {"confirm": "yes"})

        assert deleted.status_code == 302 and deleted["Location"] == reverse("home")
        assert not Conversation.objects.filter(pk=conversation.pk).exists()
        assert not Message.objects.filter(conversation_id=conversation.pk).exists()
        assert alice_client.get(conversation.get_absolute_url()).status_code == 404

    def test_deleting_the_open_conversation_sends_the_page_home(self, alice_client, conversation):
        response = alice_client.post(
            reverse("conversation_delete", args=[conversation.pk]),
            {"confirm": "yes"},
            headers={**HTMX, "HX-Current-URL": f"http://testserver/c/{conversation.pk}/"},
        )

        assert response["HX-Redirect"] == reverse("home")

    def test_deleting_another_conversation_keeps_the_page_and_renews_its_sidebar(
        self, alice_client, conversation, make_conversation
    ):
        other = make_conversation(title="Keep me")

        response = alice_client.post(
            reverse("conversation_delete", args=[conversation.pk]),
            {"confirm": "yes"},
            headers={**HTMX, "HX-Current-URL": f"http://testserver/c/{other.pk}/"},
        )

        assert "HX-Redirect" not in response
        assert listed_ids(response.content.decode()) == [str(other.pk)]

    def test_deleting_from_the_archive_returns_to_the_archive(self, alice_client, conversation):
        url = reverse("conversation_delete", args=[conversation.pk])

        page = alice_client.get(url, {"next": "/archive/"}).content.decode()
        response = alice_client.post(url, {"confirm": "yes", "next": "/archive/"})

        assert 'name="next" value="/archive/"' in page
        assert response["Location"] == "/archive/"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_deleting_a_conversation_mid_reply_stops_the_reply_without_an_error(
    alice_async_client, make_conversation, fake_openai: FakeOpenAI, caplog
):
    conversation = await sync_to_async(make_conversation)(title="Doomed")
    fake_openai.script(Reply(text="word " * 400, delay=0.01))
    reply = await generate.begin(conversation, "Talk for a long time")
    while not (await Message.objects.aget(pk=reply.pk)).content:
        await asyncio.sleep(0.01)
    caplog.set_level(logging.WARNING, logger="conversations")

    response = await alice_async_client.post(
        reverse("conversation_delete", args=[conversation.pk]), {"confirm": "yes"}
    )
    async with asyncio.timeout(10):
        await wait_for_reply(reply.pk)

    assert response.status_code == 302
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert not await Message.objects.filter(pk=reply.pk).aexists()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_reply_finishing_after_its_conversation_was_deleted_fails_nothing(
    make_conversation, fake_openai: FakeOpenAI, caplog, settings
):
    """Deleted by an operator, say, with no stop asked: the generator finds no row to save
    and the title it would ask for is skipped."""
    settings.CHAT_AUTO_TITLE = True
    conversation = await sync_to_async(make_conversation)(title="")
    fake_openai.script(Reply(text="A reply. " * 50, delay=0.01), Reply(text="A title"))
    reply = await generate.begin(conversation, "Hello")
    while not (await Message.objects.aget(pk=reply.pk)).content:
        await asyncio.sleep(0.01)
    caplog.set_level(logging.WARNING, logger="conversations")

    await Conversation.objects.filter(pk=conversation.pk).adelete()
    async with asyncio.timeout(10):
        await wait_for_reply(reply.pk)
        await asyncio.gather(*running._background_tasks)

    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()


# --------------------------------------------------------------------------- #
# Every open page of the user hears of each change
# --------------------------------------------------------------------------- #


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_every_open_page_gets_the_new_sidebar_after_each_change(
    alice_client, alice_async_client, make_conversation
):
    conversation = await sync_to_async(make_conversation)(title="Before")
    other = await sync_to_async(make_conversation)(title="Other")
    socket = await open_home_socket(alice_client)

    async def post(route: str, data: dict | None = None, target=conversation) -> str:
        await alice_async_client.post(reverse(route, args=[target.pk]), data or {})
        frame = await socket.receive_from(timeout=5)
        assert 'id="conversation-list"' in frame and 'hx-swap-oob="true"' in frame
        return sidebar_of(frame)

    try:
        renamed = await post("conversation_rename", {"title": "After"})
        pinned = await post("conversation_pin")
        archived = await post("conversation_archive")
        unarchived = await post("conversation_unarchive")
        deleted = await post("conversation_delete", {"confirm": "yes"}, target=other)
    finally:
        await socket.disconnect()

    assert ">After</a>" in renamed
    assert group_headings(pinned)[0] == "Pinned"
    assert listed_ids(archived) == [str(other.pk)]
    assert set(listed_ids(unarchived)) == {str(conversation.pk), str(other.pk)}
    assert listed_ids(deleted) == [str(conversation.pk)]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_open_chat_page_shows_the_new_title(
    alice_async_client, make_conversation, open_socket
):
    conversation = await sync_to_async(make_conversation)(
        title="Before", history=[("user", "Hi"), ("assistant", "Hello")]
    )
    page = await open_socket(conversation)
    await page.receive()  # the page's catch-up

    await alice_async_client.post(
        reverse("conversation_rename", args=[conversation.pk]), {"title": "After"}
    )

    frames = [await page.receive() for _ in range(2)]
    assert any('<h1 id="conversation-title" hx-swap-oob="true">After</h1>' in f for f in frames)


# --------------------------------------------------------------------------- #
# The sidebar: groups and pages
# --------------------------------------------------------------------------- #


class TestRecencyGroups:
    def test_groups_follow_calendar_days_in_the_site_time_zone(self, settings):
        settings.TIME_ZONE = "Pacific/Auckland"
        zone = ZoneInfo("Pacific/Auckland")
        now = datetime(2026, 3, 10, 9, 0, tzinfo=zone)
        midnight = datetime(2026, 3, 10, 0, 0, tzinfo=zone)

        def group(moment: datetime) -> str:
            return sidebar.recency_group(moment, now)

        assert group(midnight) == "Today"
        assert group(midnight - timedelta(microseconds=1)) == "Previous 7 days"
        assert group(midnight - timedelta(days=7)) == "Previous 7 days"
        assert group(midnight - timedelta(days=7, microseconds=1)) == "Older"
        # The same instant read on UTC's calendar would be yesterday there: the zone decides.
        assert midnight.astimezone(ZoneInfo("UTC")).date() < midnight.date()

    def test_a_cursor_survives_the_round_trip_exactly(self):
        moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=ZoneInfo("UTC"))
        cursor = sidebar.Cursor(moment, Conversation().id)

        assert sidebar.Cursor.parse(str(cursor)) == cursor

    @pytest.mark.parametrize("junk", ["", "abc", "12.nothex", "1.2.3", "99999999999999999999.0"])
    def test_junk_cursors_are_refused(self, junk):
        with pytest.raises(sidebar.BadCursor):
            sidebar.Cursor.parse(junk)


@pytest.mark.django_db
class TestSidebarPages:
    def test_the_home_page_groups_conversations_by_recency(self, alice_client, make_conversation):
        today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        made = {
            label: make_conversation(title=label, updated_at=moment)
            for label, moment in [
                ("today", today),
                ("yesterday", today - timedelta(microseconds=1)),
                ("a week ago", today - timedelta(days=7)),
                ("older", today - timedelta(days=7, microseconds=1)),
            ]
        }

        html = sidebar_of(alice_client.get(reverse("home")).content.decode())

        assert listed_ids(html) == [str(c.pk) for c in made.values()]
        assert group_headings(html) == ["Today", "Previous 7 days", "Older"]
        assert html.index(">Previous 7 days<") < html.index(">yesterday<")
        assert html.index(">a week ago<") < html.index(">Older<") < html.index(">older<")

    @pytest.mark.parametrize("count", [6, 7, 8])
    def test_following_more_lists_every_conversation_once_in_order(
        self, alice_client, make_conversation, monkeypatch, count
    ):
        monkeypatch.setattr(sidebar, "PAGE_SIZE", 3)
        now = timezone.now()
        # Pairs of conversations active at the very same moment straddle the page boundaries.
        made = [
            make_conversation(title=f"c{n}", updated_at=now - timedelta(hours=n // 2))
            for n in range(count)
        ]
        expected = [
            str(c.pk) for c in sorted(made, key=lambda c: (c.updated_at, c.pk), reverse=True)
        ]

        html = sidebar_of(alice_client.get(reverse("home")).content.decode())
        shown, pages = listed_ids(html), 1
        link = more_link(html)
        while link:
            html = alice_client.get(link, headers=HTMX).content.decode()
            shown += listed_ids(html)
            link, pages = more_link(html), pages + 1

        assert shown == expected
        assert pages == -(-count // 3)
        assert 'hx-trigger="intersect once"' in alice_client.get(reverse("home")).content.decode()

    def test_a_later_page_starts_a_group_only_where_one_starts(
        self, alice_client, make_conversation, monkeypatch
    ):
        monkeypatch.setattr(sidebar, "PAGE_SIZE", 2)
        today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        for n in range(3):
            make_conversation(title=f"today {n}", updated_at=today + timedelta(seconds=n))
        make_conversation(title="long ago", updated_at=today - timedelta(days=100))

        first = sidebar_of(alice_client.get(reverse("home")).content.decode())
        second = alice_client.get(more_link(first), headers=HTMX).content.decode()

        assert group_headings(first) == ["Today"]
        assert group_headings(second) == ["Older"]

    def test_the_more_link_also_works_as_a_plain_link(
        self, alice_client, make_conversation, monkeypatch
    ):
        monkeypatch.setattr(sidebar, "PAGE_SIZE", 1)
        make_conversation(title="newer")
        older = make_conversation(title="older", updated_at=timezone.now() - timedelta(hours=1))

        first = sidebar_of(alice_client.get(reverse("home")).content.decode())
        page = alice_client.get(more_link(first))

        assert page.status_code == 200
        assert "<h1>Your conversations</h1>" in page.content.decode()
        assert listed_ids(page.content.decode()) == [str(older.pk)]

    def test_a_cursor_from_nowhere_is_not_found(self, alice_client):
        response = alice_client.get(reverse("conversation_list"), {"after": "junk"})

        assert response.status_code == 404

    def test_archived_and_other_users_conversations_are_never_listed(
        self, alice_client, make_conversation, bob
    ):
        mine = make_conversation(title="mine")
        make_conversation(owner=bob, title="bob's")
        archived = make_conversation(title="archived")
        Conversation.objects.filter(pk=archived.pk).update(archived_at=timezone.now())

        html = sidebar_of(alice_client.get(reverse("home")).content.decode())

        assert listed_ids(html) == [str(mine.pk)]

    def test_the_sidebar_costs_the_same_queries_for_5_or_500_conversations(
        self, alice_client, alice, bob, make_conversation
    ):
        def queries_for_home(client: Client) -> int:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(reverse("home")).status_code == 200
            return len(queries)

        for n in range(5):
            make_conversation(title=f"few {n}", owner=bob)
        now = timezone.now()
        Conversation.objects.bulk_create(
            Conversation(owner=alice, title=f"many {n}", updated_at=now - timedelta(hours=n))
            for n in range(500)
        )
        Conversation.objects.filter(owner=alice, title__in=["many 3", "many 9"]).update(
            pinned_at=now
        )
        bob_client = Client()
        bob_client.force_login(bob)

        assert queries_for_home(alice_client) == queries_for_home(bob_client)


# --------------------------------------------------------------------------- #
# Hostile titles in every place this feature shows one
# --------------------------------------------------------------------------- #


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", PAYLOADS)
def test_hostile_titles_stay_text_in_the_sidebar_forms_dialogs_and_archive(
    alice_client, make_conversation, name, monkeypatch
):
    monkeypatch.setattr(sidebar, "PAGE_SIZE", 1)
    title = PAYLOADS[name][:TITLE_MAX_LENGTH]
    pinned = make_conversation(title=title)
    Conversation.objects.filter(pk=pinned.pk).update(pinned_at=timezone.now())
    listed = make_conversation(title=title, updated_at=timezone.now() - timedelta(days=1))
    make_conversation(title=title, updated_at=timezone.now() - timedelta(days=30))
    archived = make_conversation(title=title)
    Conversation.objects.filter(pk=archived.pk).update(archived_at=timezone.now())
    rename = reverse("conversation_rename", args=[listed.pk])
    delete = reverse("conversation_delete", args=[listed.pk])
    pages = {
        "chat": alice_client.get(listed.get_absolute_url()),
        "rename in the header": alice_client.get(rename, {"in": "header"}, headers=HTMX),
        "rename in the sidebar": alice_client.get(rename, {"in": "sidebar"}, headers=HTMX),
        "rename page": alice_client.get(rename),
        "refused rename": alice_client.post(rename, {"title": ""}, headers=HTMX),
        "label": alice_client.get(reverse("conversation_label", args=[listed.pk]), headers=HTMX),
        "delete dialog": alice_client.get(delete, headers=HTMX),
        "delete page": alice_client.get(delete),
        "archive": alice_client.get(reverse("archive")),
    }
    home = alice_client.get(reverse("home")).content.decode()
    pages["more"] = alice_client.get(more_link(home), headers=HTMX)
    pages["more page"] = alice_client.get(more_link(home))
    pin = reverse("conversation_pin", args=[listed.pk])
    pages["pinned"] = alice_client.post(pin, headers=HTMX)

    for place, response in pages.items():
        html = response.content.decode()
        assert response.status_code == 200, place
        assert executable_markup(html) == [], place
        assert foreign_markup_in_user_content(html) == [], place
    document = parse(pages["chat"].content.decode())
    assert document.by_id("conversation-title").text() == title
    summary = document.by_id(f"conversation-{listed.pk}").all("summary")[0]
    assert summary.attrs["aria-label"] == f"Actions for {title}"
    form = parse(pages["rename in the sidebar"].content.decode())
    assert (
        next(i for i in form.all("input") if i.attrs.get("name") == "title").attrs["value"] == title
    )
    dialog = parse(pages["delete dialog"].content.decode())
    assert dialog.all(class_name="delete-title")[0].text() == title
    archive = parse(pages["archive"].content.decode())
    assert archive.by_id(f"archived-{archived.pk}").all("a")[0].text() == title
