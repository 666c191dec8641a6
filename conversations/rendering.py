"""Turns message text into safe HTML: the one place where user and model text become markup."""

import hashlib
import json
import re
import uuid

import markdown_it
import nh3
import pygments
from django.core.cache import cache
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# Code blocks longer than this are shown plain: highlighting is not worth its time there.
HIGHLIGHT_MAX_CHARS = 20_000
# A fence's language is a word such as `python`, `c++` or `objective-c`; anything else (an
# attribute break-out, a sentence) is shown in the label as text but never used as a class.
_LANGUAGE_NAME = re.compile(r"^[\w+#.-]{1,40}$")
LANGUAGE_LABEL_MAX_CHARS = 40
# Part of the renderer version below: raise it whenever _render_fence's markup changes.
CODE_BLOCK_MARKUP_VERSION = 1

# Token classes only (`<span class="k">`): the CSP refuses inline styles, and the colours of
# both themes live in static/css/highlight.css (see conversations/highlight_css.py).
_formatter = HtmlFormatter(nowrap=True)


def highlight_code(code: str, language: str) -> SafeString:
    """The code as HTML, in token-classed spans when Pygments knows the language by that very
    name; escaped plain text otherwise. Nothing is guessed from the code itself."""
    if language and len(code) <= HIGHLIGHT_MAX_CHARS and _LANGUAGE_NAME.match(language):
        try:
            lexer = get_lexer_by_name(language, stripnl=False)
        except ClassNotFound:
            lexer = None
        if lexer is not None:
            # Pygments escapes the code; render_markdown's nh3 pass sanitises it once more.
            return mark_safe(pygments.highlight(code, lexer, _formatter))  # noqa: S308
    return format_html("{}", code)


def _render_fence(renderer, tokens, index, options, env) -> str:
    """A fenced code block: a toolbar naming the language with a Copy button, then the code."""
    token = tokens[index]
    info = unescapeAll(token.info).strip() if token.info else ""
    language = info.split(maxsplit=1)[0] if info else ""
    code = highlight_code(token.content, language)
    if _LANGUAGE_NAME.match(language):
        code = format_html('<code class="language-{}">{}</code>', language, code)
    else:
        code = format_html("<code>{}</code>", code)
    return format_html(
        '<div class="code-block"><div class="code-toolbar"><span class="code-language">{}</span>'
        '<button type="button" class="copy-code">Copy code</button></div><pre>{}</pre></div>\n',
        language[:LANGUAGE_LABEL_MAX_CHARS],
        code,
    )


# Raw HTML in the source is shown as text (html=False); nh3 then keeps only the tags Markdown
# itself produces, so even a renderer bug cannot let a script, an event attribute or a
# javascript: link through.
_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)
_markdown.add_render_rule("fence", _render_fence)
_markdown.add_render_rule("code_block", _render_fence)

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
# Highlighted code: token spans, and the code block's toolbar with its Copy button. Their
# classes are allowlisted one by one, and a button can only ever be a plain button.
ALLOWED_TAGS |= {"button", "div", "span"}
ALLOWED_CLASSES = {
    "button": {"copy-code"},
    "div": {"code-block", "code-toolbar"},
    "span": {"code-language", *(name for name in STANDARD_TYPES.values() if name)},
}
FORCED_ATTRIBUTES = {"button": {"type": "button"}}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
}
ALLOWED_URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> SafeString:
    html = _markdown.render(text)
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
        allowed_classes=ALLOWED_CLASSES,
        set_tag_attribute_values=FORCED_ATTRIBUTES,
    )
    return mark_safe(cleaned)  # noqa: S308 - sanitized by nh3 just above


RENDERED_CACHE_SECONDS = 60 * 60 * 24 * 7


# Changes whenever what rendering produces may change (allowlists, library versions), so HTML
# cached by an older release is never served by a newer one.
_RENDERER_VERSION = hashlib.blake2b(
    repr(
        (
            sorted(ALLOWED_TAGS),
            sorted((tag, sorted(attrs)) for tag, attrs in ALLOWED_ATTRIBUTES.items()),
            sorted(ALLOWED_URL_SCHEMES),
            sorted((tag, sorted(names)) for tag, names in ALLOWED_CLASSES.items()),
            sorted(FORCED_ATTRIBUTES.items()),
            HIGHLIGHT_MAX_CHARS,
            CODE_BLOCK_MARKUP_VERSION,
            markdown_it.__version__,
            pygments.__version__,
            nh3.__version__ if hasattr(nh3, "__version__") else "",
        )
    ).encode(),
    digest_size=4,
).hexdigest()


def _cache_key(text: str) -> str:
    # Keyed by the text itself: the same text always renders the same, and a changed text
    # can never be served stale HTML.
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return f"md:{_RENDERER_VERSION}:{digest}"


def render_markdown_cached(messages) -> None:
    """Give each finished message its rendered HTML as `.html`, from the cache in one round
    trip where it can; rendering Markdown is the costliest part of a long chat page."""
    finished = [m for m in messages if m.status != "streaming"]
    keys = {m.pk: _cache_key(m.content) for m in finished}
    found = cache.get_many(set(keys.values()))
    missing = {}
    for message in finished:
        key = keys[message.pk]
        if key not in found:
            found[key] = missing[key] = str(render_markdown(message.content))
        message.html = mark_safe(found[key])  # noqa: S308 - sanitized when rendered
    if missing:
        cache.set_many(missing, RENDERED_CACHE_SECONDS)


# One message's item in the message list, and every template file its markup comes from.
MESSAGE_TEMPLATE = "conversations/chat.html#message"
MESSAGE_TEMPLATE_FILES = (
    "conversations/chat.html",
    "conversations/copy_message.html",
    "conversations/message_details.html",
)


def _message_markup_version() -> str:
    """Changes with the Markdown renderer, the message templates and the URLs an item links to,
    so an item cached by another release, or before a template was edited, is never served."""
    nil = uuid.UUID(int=0)
    parts = [
        _RENDERER_VERSION,
        reverse("reply_regenerate", args=[nil]),
        reverse("message_edit", args=[nil, nil]),
        *(get_template(name).template.source for name in MESSAGE_TEMPLATE_FILES),
    ]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=4).hexdigest()


def _message_item_key(message, markup_version: str) -> str:
    # Keyed by everything the item shows rather than by updated_at, which not every writer
    # moves: an edit, a regeneration (a new message, the old one among its versions) or a
    # finished reply is a new key, never a stale entry.
    shown = [
        message.pk,
        message.conversation_id,
        message.role,
        message.status,
        message.content,
        message.metadata,
        [(old.pk, old.status, old.content) for old in message.versions],
    ]
    encoded = json.dumps(shown, default=str, sort_keys=True).encode()
    return f"item:{markup_version}:{hashlib.blake2b(encoded, digest_size=16).hexdigest()}"


def render_message_items(messages, conversation) -> SafeString:
    """The messages' items for the message list, each carrying its `.versions`.

    A finished message's item comes from the cache, all of them in one round trip; rendering
    the template is the costliest part of a long chat page. Only the missing ones are rendered
    (their Markdown from its own cache), and a streaming reply always is.
    """
    markup_version = _message_markup_version()
    keys = {m.pk: _message_item_key(m, markup_version) for m in messages if not m.is_streaming}
    found = cache.get_many(keys.values()) if keys else {}
    missing = [m for m in messages if keys.get(m.pk) not in found]
    render_markdown_cached([*missing, *(old for m in missing for old in m.versions)])
    rendered = {}
    for message in missing:
        context = {"message": message, "conversation": conversation}
        rendered[message.pk] = render_to_string(MESSAGE_TEMPLATE, context)
    if stored := {keys[pk]: html for pk, html in rendered.items() if pk in keys}:
        cache.set_many(stored, RENDERED_CACHE_SECONDS)
    items = (rendered[m.pk] if m.pk in rendered else found[keys[m.pk]] for m in messages)
    return mark_safe("".join(items))  # noqa: S308 - each item rendered by the template


def delta_fragment(reply_id: str, text: str) -> SafeString:
    """Streaming text for the end of a reply's element: escaped, swapped in out of band.

    Built here rather than from a template: it is sent for every batch of every streaming reply,
    and a template costs two and a half times as much.
    """
    return format_html('<div hx-swap-oob="beforeend:#message-{}-text">{}</div>', reply_id, text)
