"""Hostile text, and how to tell whether a page would run any of it.

PAYLOADS is a corpus of cross-site scripting attempts, by name: script tags, event attributes,
dangerous URL schemes in HTML and in Markdown, attribute and element break-outs for every
context our templates put text in (element text, attribute values, <title>, <textarea>),
namespace-confusion (mXSS) tricks, htmx attributes that would act without any script, and
encodings that only look harmless. Tests push each one through every place text is shown.

`parse()` turns HTML into a small element tree with the standard library's parser (no browser
needed), and `executable_markup()` lists everything in it that a browser could run or that
could make htmx act: a script that is not one of our static files, an on* attribute, a
javascript:/vbscript:/data: URL, a frame, object or base element, a <style> element, a meta
refresh, or htmx attributes inside text that users or the model wrote.
"""

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

PAYLOADS: dict[str, str] = {
    # Script elements
    "script": "<script>alert(1)</script>",
    "script-upper-src": "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "script-slash-src": "<script/src=data:,alert(1)></script>",
    "script-split": "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "script-close-open": "</script><script>alert(1)</script>",
    "script-in-code-span": "`<script>alert(1)</script>`",
    "script-after-fence": "```\n</code></pre><script>alert(1)</script>\n```",
    "script-template": "<template><script>alert(1)</script></template>",
    # Event attributes
    "img-onerror": "<img src=x onerror=alert(1)>",
    "img-onerror-entity": '<img src="x" onerror="&#97;lert(1)">',
    "img-eval-src": "<img src=x:alert(alt) onerror=eval(src) alt=0>",
    "svg-onload": "<svg onload=alert(1)>",
    "svg-slash-onload": "<svg/onload=alert(1)>",
    "body-onload": "<body onload=alert(1)>",
    "iframe-onload": "<iframe onload=alert(1)></iframe>",
    "details-ontoggle": "<details open ontoggle=alert(1)>",
    "input-autofocus": "<input autofocus onfocus=alert(1)>",
    "video-source-onerror": "<video><source onerror=alert(1)></video>",
    "marquee-onstart": "<marquee onstart=alert(1)>x</marquee>",
    "div-onmouseover": '<div onmouseover="alert(1)">hover me</div>',
    "a-onclick-markdown-text": "[click me](https://example.com) <a onclick=alert(1)>x</a>",
    # Dangerous URLs in HTML
    "a-javascript": '<a href="javascript:alert(1)">x</a>',
    "a-javascript-mixed-case": '<a href="JaVaScRiPt:alert(1)">x</a>',
    "a-javascript-entity": '<a href="&#106;avascript:alert(1)">x</a>',
    "a-javascript-tab": '<a href="jav&#x09;ascript:alert(1)">x</a>',
    "a-vbscript": '<a href="vbscript:msgbox(1)">x</a>',
    "a-data-html": '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    "iframe-javascript": '<iframe src="javascript:alert(1)"></iframe>',
    "iframe-srcdoc": '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "form-action": '<form action="javascript:alert(1)"><button>go</button></form>',
    "button-formaction": "<button formaction=javascript:alert(1)>go</button>",
    "object-data": '<object data="javascript:alert(1)"></object>',
    "embed-data-html": '<embed src="data:text/html,<script>alert(1)</script>">',
    "base-href": '<base href="javascript:alert(1)//">',
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "link-stylesheet": "<link rel=stylesheet href=javascript:alert(1)>",
    # Dangerous URLs in Markdown
    "md-link-javascript": "[click](javascript:alert(1))",
    "md-link-javascript-upper": "[click](JAVASCRIPT:alert(1))",
    "md-link-javascript-colon-entity": "[click](javascript&colon;alert(1))",
    "md-link-javascript-char-ref": "[click](&#106;avascript:alert(1))",
    "md-link-javascript-percent": "[click](javascript:alert%281%29)",
    "md-link-javascript-padded": "[click](  javascript:alert(1)  )",
    "md-link-vbscript": "[click](vbscript:msgbox(1))",
    "md-link-data": "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "md-image-javascript": "![pic](javascript:alert(1))",
    "md-image-data-html": "![pic](data:text/html,<script>alert(1)</script>)",
    "md-autolink-javascript": "<javascript:alert(1)>",
    "md-reference-javascript": "[click][evil]\n\n[evil]: javascript:alert(1)",
    "md-link-title-breakout": '[x](https://example.com "a\\" onmouseover=\\"alert(1)")',
    "md-link-text-html": "[<img src=x onerror=alert(1)>](https://example.com)",
    "md-table-cell-html": "| a | b |\n|:--|--:|\n| <img src=x onerror=alert(1)> | ok |",
    # Break-outs from the contexts our templates use
    "attr-double-quote": '"><script>alert(1)</script>',
    "attr-single-quote": "'><img src=x onerror=alert(1)>",
    "attr-event-injection": '" onmouseover="alert(1)" x="',
    "attr-autofocus-injection": "' autofocus onfocus='alert(1)' x='",
    "close-title": "</title><script>alert(1)</script>",
    "close-textarea": "</textarea><script>alert(1)</script>",
    "close-heading": "</h1><img src=x onerror=alert(1)>",
    "close-comment": "--><script>alert(1)</script><!--",
    "close-cdata": "]]><script>alert(1)</script>",
    # Styles
    "style-attribute-url": '<p style="background:url(javascript:alert(1))">x</p>',
    "style-expression": '<div style="width:expression(alert(1))">x</div>',
    "style-element": "<style>@import 'https://evil.example/x.css'; body{display:none}</style>",
    # Namespace confusion and parser differentials (mXSS)
    "mxss-math-style": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "mxss-svg-style": "<svg><style><img src=x onerror=alert(1)></style></svg>",
    "mxss-noscript-title": '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "mxss-form-math": (
        "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>"
    ),
    "mxss-comment-attr": '<!--<img src="--><img src=x onerror=alert(1)//">',
    "xmp": "<xmp><img src=x onerror=alert(1)></xmp>",
    # htmx acts on attributes alone: a request on load, or its own event handlers
    "htmx-get-on-load": '<div hx-get="/c/new/" hx-trigger="load">x</div>',
    "htmx-post-data-prefix": '<div data-hx-post="/accounts/logout/" data-hx-trigger="load">x</div>',
    "htmx-on": '<button hx-on:click="alert(1)">x</button>',
    "htmx-oob-swap": '<div id="composer" hx-swap-oob="true">replaced</div>',
    "htmx-ws-send": '<form ws-send hx-trigger="load"><input name="x"></form>',
    # Encodings that must stay exactly what they are
    "already-escaped": "&lt;script&gt;alert(1)&lt;/script&gt;",
    "percent-encoded": "%3Cscript%3Ealert(1)%3C/script%3E",
    "js-escaped": "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",
    "fullwidth-brackets": "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e",
    "template-syntax": "{{ request.user.password }} {% csrf_token %} ${alert(1)}",
    "right-to-left-override": "\u202egnp.exe <b>bold?</b>",
    "ampersand-entities": "&amp; &#60;script&#62; &#x3C;img src=x onerror=alert(1)&#x3E;",
}

# Text that only looks like markup, or would turn into some if decoded twice: it must be shown
# exactly as written, and nothing in it is markup in any context.
INERT_PAYLOADS = {
    "already-escaped", "percent-encoded", "js-escaped", "fullwidth-brackets", "template-syntax",
    "ampersand-entities",
}  # fmt: skip

# Elements none of our pages has, whatever their attributes: each can run or load something,
# or makes the parser switch to rules where sanitizers and browsers disagree.
FORBIDDEN_ELEMENTS = {
    "applet", "base", "embed", "frame", "frameset", "iframe", "math", "noscript", "object",
    "portal", "style", "svg", "template", "xmp",
}  # fmt: skip
# Our pages have these in their <head> only.
HEAD_ONLY_ELEMENTS = {"link", "meta", "title"}
URL_ATTRIBUTES = {
    "action", "background", "cite", "data", "formaction", "href", "lowsrc", "ping", "poster",
    "src", "srcset", "xlink:href",
}  # fmt: skip
DANGEROUS_SCHEME = re.compile(r"^(javascript|vbscript|data):", re.IGNORECASE)
# Browsers drop ASCII tabs and newlines anywhere in a URL and spaces and controls around it.
URL_IGNORED = re.compile(r"[\x00-\x20]")
VOID_ELEMENTS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}  # fmt: skip
# What the Markdown renderer may produce inside a message body, and nothing else.
MARKDOWN_ELEMENTS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
MARKDOWN_ATTRIBUTES = {"href", "title", "rel", "class", "start", "style"}
# A code block: its toolbar (language label, Copy button) and Pygments' token spans. These
# elements may carry only these classes, and the button is always a plain one.
MARKDOWN_ELEMENTS |= {"button", "div", "span"}
MARKDOWN_ATTRIBUTES |= {"type"}
CODE_BLOCK_CLASSES = {
    "button": {"copy-code"},
    "div": {"code-block", "code-toolbar"},
    "span": {"code-language"},
}
PYGMENTS_TOKEN_CLASS = re.compile(r"^[a-z][a-z0-9]{0,2}$")
TEXT_ALIGNMENT = re.compile(r"^text-align:\s*(left|right|center);?$")


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: "Element | None" = None
    children: list["Element | str"] = field(default_factory=list)

    def iter(self) -> Iterator["Element"]:
        """This element and every element inside it, in document order."""
        # A stack rather than nested generators: pages are a dozen elements deep, and the
        # auditors walk every page a test fetches.
        stack = [self]
        while stack:
            element = stack.pop()
            yield element
            inside = [child for child in element.children if isinstance(child, Element)]
            stack.extend(reversed(inside))

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def by_id(self, element_id: str) -> "Element":
        found = [element for element in self.iter() if element.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def all(self, tag: str = "", class_name: str = "") -> list["Element"]:
        return [
            element
            for element in self.iter()
            if (not tag or element.tag == tag)
            and (not class_name or class_name in element.classes())
        ]

    def describe(self) -> str:
        attributes = "".join(f" {name}={value!r}" for name, value in self.attrs.items())
        return f"<{self.tag}{attributes}>"


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID_ELEMENTS:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(
            Element(tag, {name: value or "" for name, value in attrs}, self.current)
        )

    def handle_endtag(self, tag: str) -> None:
        # Close the nearest open element of that name (and anything left open inside it).
        element = self.current
        while element is not None and element.tag != tag:
            element = element.parent
        if element is not None and element.parent is not None:
            self.current = element.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


@functools.lru_cache(maxsize=32)
def parse(html: str) -> Element:
    """The page's element tree. A page is parsed once, however many of the auditors and the
    test read it: they only read the tree."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def _in_head(element: Element) -> bool:
    while element.parent is not None:
        element = element.parent
        if element.tag == "head":
            return True
    return False


def _svg_title(element: Element) -> bool:
    """An SVG's <title> is its tooltip and accessible name, not the document's title."""
    return (
        element.tag == "title"
        and element.parent is not None
        and any(ancestor.tag == "svg" for ancestor in _ancestors(element))
    )


def _ancestors(element: Element) -> Iterator[Element]:
    while element.parent is not None:
        element = element.parent
        yield element


def _is_data_block(script: Element) -> bool:
    """A JSON <script> holds data for a script to read (allauth's pages have one); browsers
    never run it."""
    return "src" not in script.attrs and script.attrs.get("type") == "application/json"


def executable_markup(html: str, *, own_elements: frozenset[str] = frozenset()) -> list[str]:
    """Everything in the page or fragment that a browser would run, or that would make htmx
    act on its own. Our pages and fragments are expected to have none.

    `own_elements` names forbidden elements the page itself uses, such as the Django admin's
    inline <svg> icons; what is inside them is still checked.
    """
    findings = []
    for element in parse(html).iter():
        if element.tag == "#document":
            continue
        where = element.describe()
        if element.tag == "script" and not _is_data_block(element):
            src = element.attrs.get("src", "")
            if not src.startswith("/") or src.startswith("//") or element.text().strip():
                findings.append(f"a script that is not one of our static files: {where}")
        if element.tag in FORBIDDEN_ELEMENTS - own_elements:
            findings.append(f"a forbidden element: {where}")
        if element.tag in HEAD_ONLY_ELEMENTS and not _in_head(element) and not _svg_title(element):
            findings.append(f"a head element outside <head>: {where}")
        if element.tag == "meta" and element.attrs.get("http-equiv", "").lower() == "refresh":
            findings.append(f"a meta refresh: {where}")
        for name, value in element.attrs.items():
            if name.startswith("on"):
                findings.append(f"an event handler attribute: {where}")
            if name == "srcdoc":
                findings.append(f"a frame document in an attribute: {where}")
            if name in URL_ATTRIBUTES and DANGEROUS_SCHEME.match(URL_IGNORED.sub("", value)):
                if not (element.tag == "link" and value == "data:,"):  # our empty favicon
                    findings.append(f"a {value.split(':')[0]}: URL: {where}")
            if name == "style" and re.search(r"url\(|expression\(|javascript:", value, re.I):
                findings.append(f"a style that loads or runs something: {where}")
    return findings


def foreign_markup_in_user_content(html: str) -> list[str]:
    """Markup inside text a user or the model wrote that the Markdown renderer would never
    produce: any element or attribute outside its small allowlist (htmx attributes above all).

    User text lives in message bodies (Markdown, or escaped text while streaming), titles,
    the conversation list, the edit form's textarea and the model names of the usage pages,
    which must hold no markup at all.
    """
    document = parse(html)
    findings = []
    for body in document.all(class_name="message-body"):
        for element in list(body.iter())[1:]:
            where = element.describe()
            if element.tag not in MARKDOWN_ELEMENTS:
                findings.append(f"an element the renderer never makes: {where}")
            for name, value in element.attrs.items():
                if name not in MARKDOWN_ATTRIBUTES:
                    findings.append(f"an attribute the renderer never makes: {where}")
                if name == "style" and not TEXT_ALIGNMENT.match(value):
                    findings.append(f"a style other than table alignment: {where}")
                if name == "type" and (element.tag, value) != ("button", "button"):
                    findings.append(f"a type other than a plain button: {where}")
            if element.tag in CODE_BLOCK_CLASSES:
                allowed = CODE_BLOCK_CLASSES[element.tag]
                for name in element.classes() - allowed:
                    if element.tag != "span" or not PYGMENTS_TOKEN_CLASS.match(name):
                        findings.append(f"a class the renderer never gives: {where}")
    text_only = [*document.all("title"), *document.all("textarea")]
    text_only += [e for e in document.iter() if e.attrs.get("id") == "conversation-title"]
    for sidebar in document.all(class_name="conversation-list"):
        text_only.extend(sidebar.all("a"))
    text_only += document.all(class_name="usage-model")  # model names on the usage pages
    for container in text_only:
        for element in list(container.iter())[1:]:
            findings.append(f"markup inside {container.describe()}: {element.describe()}")
    return findings


def assert_inert(html: str, *, admin: bool = False) -> Element:
    """Nothing in the page would run, and user text holds no markup; returns the parsed page.
    The admin draws its icons with inline <svg>, which our own pages never use."""
    own_elements = frozenset({"svg"} if admin else ())
    assert executable_markup(html, own_elements=own_elements) == []
    assert foreign_markup_in_user_content(html) == []
    return parse(html)
