"""The admin's lists, as staff read them."""

import pytest
from django.urls import reverse

from conversations.models import Message
from tests.support.xss import Element, parse

pytestmark = pytest.mark.django_db


def column(table: Element, heading: str) -> list[str]:
    """The text of each row's cell under `heading` in an admin change list."""
    headings = [cell.text().strip() for cell in table.all("thead")[0].all("th")]
    place = headings.index(heading)
    rows = table.all("tbody")[0].all("tr")
    return [
        [c for c in row.children if isinstance(c, Element)][place].text().strip() for row in rows
    ]


def test_the_messages_list_names_the_model_of_each_reply(admin_client, make_conversation):
    conversation = make_conversation(history=[("user", "Hello")])
    conversation.messages.create(
        role=Message.Role.ASSISTANT, content="Hi", metadata={"model": "llama3.2:3b"}
    )

    changelist = admin_client.get(reverse("admin:conversations_message_changelist"))

    table = parse(changelist.content.decode()).by_id("result_list")
    assert sorted(column(table, "Model")) == ["-", "llama3.2:3b"]  # the question has none
