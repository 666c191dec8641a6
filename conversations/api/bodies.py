"""Reading the API's request bodies: JSON objects whose text fields are checked with the
pages' own forms (conversations/forms.py), so a message or a name the pages refuse is refused
here too, with the same words."""

import json
import re

from django import forms as django_forms
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from conversations import forms
from conversations.api.auth import ApiError
from conversations.errors import ErrorCode

# Half of a UTF-16 pair, alone: JSON can spell it ("\ud800"), but it is no character, and
# neither UTF-8 nor a database can hold it. (json.loads joins a whole pair into one character.)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_body(request: HttpRequest) -> dict:
    try:
        body = request.body
    except RequestDataTooBig:
        raise ApiError(413, ErrorCode.TOO_LARGE, "The request body is too large.") from None
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, ErrorCode.INVALID_JSON, "The request body is not valid JSON.") from None
    except RecursionError:
        raise ApiError(
            400, ErrorCode.INVALID_JSON, "The request body is nested too deeply."
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, ErrorCode.INVALID_JSON, "The request body must be a JSON object.")
    return data


def _text(data: dict, name: str) -> str | None:
    """`data[name]` if it is text (None if absent or null), what a form field would be given."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, ErrorCode.INVALID, f"`{name}` must be a string.")
    if LONE_SURROGATE.search(value):
        raise ApiError(
            400,
            "invalid",
            f"`{name}` is not valid Unicode. A lone UTF-16 surrogate (\\ud800 to \\udfff) "
            "is not text.",
        )
    return value


def _cleaned(form: django_forms.Form, field: str) -> str:
    """The field as `form` cleans it; its errors, as the page shows them, in a 400 (a 413 for
    a message over the length limit)."""
    if form.is_valid():
        return form.cleaned_data[field]
    errors = form.errors.get_json_data()[field]
    message = " ".join(error["message"] for error in errors)
    if any(error["code"] == forms.MESSAGE_TOO_LONG for error in errors):
        raise ApiError(413, ErrorCode.MESSAGE_TOO_LONG, message)
    raise ApiError(400, ErrorCode.INVALID, message)


def message_text(data: dict) -> str:
    """`content`, checked as the composer's text is: required, at most CHAT_MAX_MESSAGE_CHARS."""
    return _cleaned(forms.MessageForm({"text": _text(data, "content")}), "text")


def title(data: dict, *, required: bool) -> str:
    """`title`, checked and tidied as a rename on the pages is; blank when not `required`
    and not given."""
    form = forms.RenameForm({"title": _text(data, "title")})
    form.fields["title"].required = required
    return _cleaned(form, "title")
