"""User and model text becomes safe HTML: Markdown is rendered, markup and scripts are not."""

import html
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from conversations.models import Message
from conversations.rendering import render_markdown
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply

# What Markdown itself produces; anything else in the output came from the text.
MARKDOWN_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
SAFE_SCHEMES = {"", "http", "https", "mailto"}

HOSTILE = {
    "script-tag": "<script>alert(1)</script>",
    "script-tag-uppercase": "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    "script-split": "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "img-onerror": "<img src=x onerror=alert(1)>",
    "svg-onload": "<svg onload=alert(1)><circle r=1 /></svg>",
    "iframe": '<iframe src="javascript:alert(1)"></iframe>',
    "style-tag": "<style>body { display: none }</style>",
    "style-attribute": '<p style="background:url(javascript:alert(1))">x</p>',
    "event-attribute": '<a href="https://example.com" onclick="alert(1)">x</a>',
    "html-javascript-link": '<a href="javascript:alert(1)">x</a>',
    "object": '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></object>',
    "form": '<form action="https://evil.example"><input name="password"></form>',
    "mxss": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "md-javascript-link": "[click me](javascript:alert(1))",
    "md-javascript-mixed-case": "[click me](JaVaScRiPt:alert(1))",
    "md-javascript-entity": "[click me](java&#x73;cript:alert(1))",
    "md-javascript-decimal-entity": "[click me](&#106;avascript:alert(1))",
    "md-javascript-whitespace": "[click me](\tjavascript:alert(1))",
    "md-javascript-reference": "[click me][evil]\n\n[evil]: javascript:alert(1)",
    "md-data-link": "[click me](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "md-vbscript-link": "[click me](vbscript:msgbox(1))",
    "md-image-javascript": "![cat](javascript:alert(1))",
    "md-image-data": "![cat](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "md-image-onerror": '![cat](x" onerror="alert(1))',
    "md-link-title-breakout": '[x](https://example.com "\\" onmouseover=\\"alert(1)")',
    "autolink-javascript": "<javascript:alert(1)>",
    "autolink-data": "<data:text/html,<script>alert(1)</script>>",
    "autolink-vbscript": "<vbscript:msgbox(1)>",
    "entity-script": "&lt;script&gt;alert(1)&lt;/script&gt;",
    "entity-hex-script": "&#x3C;script&#x3E;alert(1)&#x3C;/script&#x3E;",
    "markdown-around-html": "**<script>alert(1)</script>** and _<img src=x onerror=alert(1)>_",
    "html-inside-link-text": "[<img src=x onerror=alert(1)>](https://example.com)",
    "html-in-table": "| a | b |\n|---|---|\n| <script>alert(1)</script> | <b onclick=x>b</b> |",
    "html-in-list": "- <iframe src=https://evil.example></iframe>\n- <style>*{}</style>",
    "code-span-then-html": "`code` <script>alert(1)</script>",
    "html-comment": "x<!-- --><svg/onload=alert(1)>",
}


class Elements(HTMLParser):
    """Every element and attribute in a piece of HTML, and the text a reader sees."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text = ""
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text += data

    def event_handlers(self) -> list[str]:
        return [name for _, attributes in self.tags for name in attributes if name.startswith("on")]


def url_scheme(url: str) -> str:
    # Browsers drop control characters and spaces before a scheme; so does this check.
    return urlsplit("".join(ch for ch in url if ch > " ")).scheme.lower()


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_renders_without_anything_that_runs(source):
    rendered = str(render_markdown(source))

    assert "<script" not in rendered.lower()
    elements = Elements(rendered)
    assert elements.event_handlers() == []
    for tag, attributes in elements.tags:
        assert tag in MARKDOWN_TAGS
        assert url_scheme(attributes.get("href", "")) in SAFE_SCHEMES
        assert attributes.get("style", "text-align:left").startswith("text-align:")


def test_hostile_html_is_shown_as_text_not_dropped():
    rendered = str(render_markdown("Look: <script>alert(1)</script>"))

    assert html.unescape(rendered) == "<p>Look: <script>alert(1)</script></p>\n"
    assert "&lt;script&gt;" in rendered


def test_everyday_markdown_renders():
    source = "\n".join(
        [
            "# Trip plan",
            "",
            "Day one is **busy**, day two is *slow*, ~~day three~~ is `free`.",
            "",
            "3. Lisbon",
            "4. Porto",
            "",
            "- trains",
            "- food",
            "",
            "> Pack light.",
            "",
            "See [the timetable](https://www.cp.pt/) or <mailto:trips@example.com>.",
            "",
            "| City | Nights |",
            "|:-----|-------:|",
            "| Lisbon | 3 |",
            "",
            "```python",
            'print("<Bom dia>")',
            "```",
        ]
    )

    rendered = str(render_markdown(source))
    elements = Elements(rendered).tags

    assert "<h1>Trip plan</h1>" in rendered
    assert "<strong>busy</strong>" in rendered
    assert "<em>slow</em>" in rendered
    assert "<s>day three</s>" in rendered or "<del>day three</del>" in rendered
    assert "<code>free</code>" in rendered
    assert ("ol", {"start": "3"}) in elements
    assert "<li>trains</li>" in rendered
    assert "<blockquote>" in rendered
    assert ("a", {"href": "https://www.cp.pt/", "rel": "noopener noreferrer nofollow"}) in elements
    assert ("a", {"href": "mailto:trips@example.com", "rel": "noopener noreferrer nofollow"}) in (
        elements
    )
    assert ("th", {"style": "text-align:left"}) in elements
    assert ("td", {"style": "text-align:right"}) in elements
    assert ("code", {"class": "language-python"}) in elements
    assert 'print("<Bom dia>")' in Elements(rendered).text  # highlighted, so split in spans
    assert "<Bom dia>" not in rendered


HOSTILE_USER_TEXT = "<script>alert('from the user')</script>"
HOSTILE_MODEL_TEXT = "<img src=x onerror=alert('from the model')>"


@pytest.mark.django_db
class TestChatPage:
    def test_stored_messages_and_titles_are_shown_as_text(self, alice_client, make_conversation):
        conversation = make_conversation(
            title="<script>alert('title')</script>",
            history=[("user", HOSTILE_USER_TEXT), ("assistant", HOSTILE_MODEL_TEXT)],
        )

        page = alice_client.get(conversation.get_absolute_url()).content.decode()
        elements = Elements(page)

        assert "<script>alert(" not in page
        assert "img" not in {tag for tag, _ in elements.tags}
        assert elements.event_handlers() == []
        assert HOSTILE_USER_TEXT in elements.text
        assert HOSTILE_MODEL_TEXT in elements.text
        # In the window title, the heading and the sidebar.
        assert elements.text.count("<script>alert('title')</script>") == 3

    def test_a_streaming_reply_and_an_error_are_shown_as_text(self, alice_client, conversation):
        conversation.messages.create(role="user", content="Go on")
        conversation.messages.create(
            role="assistant", status=Message.Status.STREAMING, content=HOSTILE_MODEL_TEXT
        )
        conversation.messages.create(role="user", content="And?")
        conversation.messages.create(
            role="assistant",
            status=Message.Status.ERROR,
            metadata={"error": "Provider said: <b onmouseover=alert(1)>no</b>"},
        )

        page = alice_client.get(conversation.get_absolute_url()).content.decode()
        elements = Elements(page)

        assert not {"img", "b"} & {tag for tag, _ in elements.tags}
        assert elements.event_handlers() == []
        assert HOSTILE_MODEL_TEXT in elements.text
        assert "Provider said: <b onmouseover=alert(1)>no</b>" in elements.text


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_hostile_model_output_streams_to_the_page_as_text(
    open_socket, alice_async_client, conversation, fake_openai
):
    chunks = [
        "<scr",
        "ipt>alert(1)</script>",
        " and ",
        HOSTILE_MODEL_TEXT,
        " [x](javascript:alert(1))",
    ]
    fake_openai.script(Reply(chunks=chunks, delay=0.01))
    socket = await open_socket(conversation)

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]),
        {"text": HOSTILE_USER_TEXT},
        headers={"HX-Request": "true"},
    )
    reply = await conversation.messages.filter(role="assistant").alatest("created_at")
    finished = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    await reply.arefresh_from_db()
    assert reply.content == "".join(chunks)
    assert socket.text_of(reply) == reply.content
    for frame in socket.frames:
        elements = Elements(frame)
        assert "<script" not in frame.lower()
        assert not {"script", "img"} & {tag for tag, _ in elements.tags}
        assert elements.event_handlers() == []
        assert all(
            url_scheme(attributes.get("href", "")) in SAFE_SCHEMES
            for _, attributes in elements.tags
        )
    assert "<script>alert(1)</script>" in Elements(finished).text
