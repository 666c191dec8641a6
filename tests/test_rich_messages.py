"""Rich messages: highlighted code with a Copy button per block, tables, a Copy button and
details on demand per message, and the stylesheet that colours code in both themes."""

import re
from pathlib import Path

import nh3
import pytest
from django.urls import reverse

from conversations.highlight_css import stylesheet
from conversations.models import Message
from conversations.rendering import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_CLASSES,
    ALLOWED_TAGS,
    HIGHLIGHT_MAX_CHARS,
    render_markdown,
)
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply
from tests.support.xss import Element, executable_markup, parse

STYLESHEET = Path(__file__).resolve().parent.parent / "static" / "css" / "highlight.css"


def rendered(source: str) -> Element:
    return parse(str(render_markdown(source)))


def code_blocks(document: Element) -> list[Element]:
    return document.all("div", "code-block")


def token_classes(block: Element) -> set[str]:
    return {name for span in block.all("span") for name in span.classes()} - {"code-language"}


def test_python_and_javascript_are_highlighted_with_token_classes() -> None:
    document = rendered(
        "```python\ndef greet(name):\n    return f'hi {name}'\n```\n\n"
        "```js\nconst answer = () => 42;\n```"
    )

    python, javascript = code_blocks(document)
    assert {"k", "nf"} <= token_classes(python)  # `def` and `greet`
    assert "kd" in token_classes(javascript)  # `const`
    assert token_classes(javascript) & {"mi", "mf"}  # `42`
    assert python.all("code")[0].text() == "def greet(name):\n    return f'hi {name}'\n"
    assert javascript.all("code")[0].text() == "const answer = () => 42;\n"
    # Colours come from the stylesheet: the CSP refuses inline styles.
    assert all("style" not in element.attrs for element in document.iter())


def test_every_code_block_has_a_language_label_and_a_plain_copy_button() -> None:
    document = rendered("```python\nx = 1\n```\n\n    indented code\n\n```\nno language\n```")

    blocks = code_blocks(document)
    assert [block.all("span", "code-language")[0].text() for block in blocks] == [
        "python",
        "",
        "",
    ]
    for block in blocks:
        (button,) = block.all("button")
        assert button.attrs == {"class": "copy-code", "type": "button"}
        assert button.text() == "Copy code"
    assert blocks[1].all("code")[0].text() == "indented code\n"


@pytest.mark.parametrize(
    "language", ["no-such-language", "", "a" * 200, "python3 extra words", "c++"]
)
def test_unknown_or_odd_languages_show_the_code_as_escaped_text(language: str) -> None:
    code = "if (a < b && c > d) { return '<b>'; }\n"

    document = rendered(f"```{language}\n{code}```")

    (block,) = code_blocks(document)
    assert block.all("code")[0].text() == code
    assert not block.all("b")
    label = block.all("span", "code-language")[0].text()
    assert label == language.split(" ")[0][:40]


@pytest.mark.parametrize(
    ("info", "code_attributes"),
    [
        ('"><script>alert(1)</script>', {}),
        ("x onmouseover=alert(1)", {"class": "language-x"}),
        ("hx-get=/c/new/", {}),
        ('python" onclick="alert(1)', {}),
    ],
)
def test_a_hostile_language_name_is_text_in_the_label_and_never_markup(
    info: str, code_attributes: dict
) -> None:
    markup = str(render_markdown(f"```{info}\nprint(1)\n```"))

    assert executable_markup(markup) == []
    (block,) = code_blocks(parse(markup))
    assert block.all("span", "code-language")[0].text() == info.split(" ")[0]
    assert block.all("code")[0].attrs == code_attributes
    assert block.all("code")[0].text() == "print(1)\n"


def test_a_huge_code_block_is_shown_plain_and_whole() -> None:
    code = "x = 1\n" * (HIGHLIGHT_MAX_CHARS // 6 + 1)

    (block,) = code_blocks(rendered(f"```python\n{code}```"))

    assert token_classes(block) == set()
    assert block.all("code")[0].text() == code


def test_gfm_tables_render_with_alignment() -> None:
    document = rendered("| Tool | Stars |\n|:-----|------:|\n| `ruff` | 30 |\n| pytest | 12 |")

    (table,) = document.all("table")
    assert [th.text() for th in table.all("th")] == ["Tool", "Stars"]
    assert [td.text() for td in table.all("td")] == ["ruff", "30", "pytest", "12"]
    assert table.all("td")[1].attrs == {"style": "text-align:right"}


def test_html_injected_around_highlighting_is_stripped_by_the_sanitiser() -> None:
    """Even a renderer that let markup through would meet nh3: no foreign class, no handler,
    and a button stays a plain button."""
    dirty = (
        '<div class="code-block evil" onclick="x"><button type="submit" class="copy-code other" '
        'formaction="/accounts/logout/">Go</button><span class="k evil" hx-get="/">if</span></div>'
    )
    clean = nh3.clean(
        dirty,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        allowed_classes=ALLOWED_CLASSES,
        set_tag_attribute_values={"button": {"type": "button"}},
    )

    assert clean == (
        '<div class="code-block"><button class="copy-code" type="button">Go</button>'
        '<span class="k">if</span></div>'
    )


def media_block(css: str, query: str) -> str:
    start = css.index(f"@media {query} {{\n")
    return css[start : css.index("\n}\n", start)]


def test_the_stylesheet_is_the_generated_one_with_both_palettes() -> None:
    """Light by default, dark when the system prefers it, and `data-theme` on <html> wins
    over the system either way."""
    css = STYLESHEET.read_text()

    assert css == stylesheet(), "regenerate: python -m conversations.highlight_css"
    light = media_block(css, "not all and (prefers-color-scheme: dark)")
    dark = media_block(css, "(prefers-color-scheme: dark)")
    assert ':root:not([data-theme="dark"]) .code-block .k {' in light
    assert ':root:not([data-theme="light"]) .code-block .k {' in dark
    keyword_colours = {
        scope: re.search(re.escape(scope) + r" \.k \{ color: (#\w+)", css)[1]
        for scope in (
            ':root:not([data-theme="dark"]) .code-block',
            ':root:not([data-theme="light"]) .code-block',
            ':root[data-theme="light"] .code-block',
            ':root[data-theme="dark"] .code-block',
        )
    }
    light_colour, dark_colour, forced_light, forced_dark = keyword_colours.values()
    assert light_colour != dark_colour
    assert (forced_light, forced_dark) == (light_colour, dark_colour)


@pytest.mark.django_db
class TestChatPage:
    def test_each_message_has_a_copy_button_holding_its_markdown_source(
        self, alice_client, make_conversation
    ) -> None:
        source = "Use **this**:\n\n```python\nprint('<hi>')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |"
        conversation = make_conversation(history=[("user", "Show me"), ("assistant", source)])
        reply = conversation.messages.get(role="assistant")

        page = parse(alice_client.get(conversation.get_absolute_url()).content.decode())

        shown = page.by_id(f"message-{reply.pk}")
        (copy,) = shown.all("button", "copy-message")
        assert copy.attrs["data-copy-text"] == source
        assert copy.attrs["type"] == "button"
        assert len(shown.all("button", "copy-code")) == 1
        assert shown.all("table")
        question = page.all("li", "message-user")[0]
        assert question.all("button", "copy-message")[0].attrs["data-copy-text"] == "Show me"

    def test_details_show_model_provider_tokens_finish_reason_and_timings(
        self, alice_client, make_conversation
    ) -> None:
        conversation = make_conversation(history=[("user", "Hi")])
        conversation.messages.create(
            role="assistant",
            content="Hello",
            metadata={
                "model": "gpt-test",
                "provider": "Example AI",
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
                "finish_reason": "length",
                "timings": {"total_seconds": 1.25, "first_token_seconds": 0.4},
            },
        )

        page = parse(alice_client.get(conversation.get_absolute_url()).content.decode())

        (details,) = page.all("details", "message-meta")
        assert details.all("summary")[0].text() == "Details"
        assert "open" not in details.attrs
        terms = [dt.text() for dt in details.all("dt")]
        values = [dd.text() for dd in details.all("dd")]
        assert dict(zip(terms, values, strict=True)) == {
            "Model": "gpt-test",
            "Provider": "Example AI",
            "Tokens": "12 prompt, 3 completion, 15 total",
            "Finish reason": "length",
            "First token": "0.4 s",
            "Total time": "1.25 s",
        }

    def test_a_streaming_reply_has_no_buttons_until_it_is_finished(
        self, alice_client, make_conversation
    ) -> None:
        conversation = make_conversation(history=[("user", "Hi")])
        reply = conversation.messages.create(
            role="assistant", status=Message.Status.STREAMING, content="```python\nx ="
        )

        page = parse(alice_client.get(conversation.get_absolute_url()).content.decode())

        shown = page.by_id(f"message-{reply.pk}")
        assert shown.all(class_name="streaming")[0].text() == "```python\nx ="
        assert not shown.all("button")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_finished_streamed_reply_arrives_highlighted_with_its_buttons(
    open_socket, alice_async_client, conversation, fake_openai
) -> None:
    answer = "Here:\n\n```python\nimport os\nprint(os.getcwd())\n```\n"
    fake_openai.script(Reply(chunks=[answer[:10], answer[10:30], answer[30:]], delay=0.01))
    socket = await open_socket(conversation)

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]),
        {"text": "Where am I?"},
        headers={"HX-Request": "true"},
    )
    reply = await conversation.messages.filter(role="assistant").alatest("created_at")
    finished = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    shown = parse(finished).by_id(f"message-{reply.pk}")
    (block,) = code_blocks(shown)
    assert {"kn", "nn"} <= token_classes(block)  # `import` and `os`
    assert block.all("button", "copy-code")
    (copy,) = shown.all("button", "copy-message")
    assert copy.attrs["data-copy-text"] == answer
    assert shown.all("details", "message-meta")
