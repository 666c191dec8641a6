"""Turns message text into safe HTML: the one place where user and model text become markup."""

import hashlib

import markdown_it
import nh3
from django.core.cache import cache
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# Raw HTML in the source is shown as text (html=False); nh3 then keeps only the tags Markdown
# itself produces, so even a renderer bug cannot let a script, an event attribute or a
# javascript: link through.
_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
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
            markdown_it.__version__,
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
