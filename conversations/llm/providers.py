"""Which model providers the site offers, and which models each of them has.

The provider of OPENAI_API_KEY / OPENAI_BASE_URL (slug `default`) keeps working as before; more
come from a TOML file named by CHAT_PROVIDERS_FILE (see README.md). With nothing configured,
the built-in offline model (slug `offline`) is the only provider.

A conversation stores its choice as two strings, a provider slug and a model id, never joined:
model ids contain "/" (OpenRouter) and ":" (Ollama).
"""

import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from conversations.llm.offline import OFFLINE_MODEL

logger = logging.getLogger(__name__)

DEFAULT_SLUG = "default"
OFFLINE_SLUG = "offline"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
# The keys a provider's table may have; any other is a mistake (a typo would otherwise be
# ignored, and its setting silently missing).
PROVIDER_KEYS = (
    "slug",
    "label",
    "base_url",
    "api_key_env",
    "models",
    "default_model",
    "context_window",
    "context_windows",
    "discover",
    "offline",
)
# A failed model listing is retried this soon: long enough not to slow every page down while
# a provider is away, short enough that its models come back on their own.
FAILED_LISTING_SECONDS = 30


@dataclass(frozen=True)
class Provider:
    slug: str
    label: str
    base_url: str = ""
    # The NAME of the environment variable holding the key; the key itself is read when used.
    api_key_env: str = ""
    # The fallback when the provider cannot list its models, and the whole list without
    # discovery.
    models: tuple[str, ...] = ()
    default_model: str = ""
    context_windows: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    context_window: int = 0
    discover: bool = True
    offline: bool = False
    # The OPENAI_* provider's key, as settings hold it; the others read `api_key_env`.
    settings_key: str = field(default="", repr=False)

    @property
    def api_key(self) -> str:
        if self.settings_key:
            return self.settings_key
        return os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""

    def context_window_for(self, model: str) -> int:
        return (
            self.context_windows.get(model) or self.context_window or settings.CHAT_CONTEXT_WINDOW
        )


@dataclass(frozen=True)
class ModelChoice:
    provider: Provider
    model: str

    @property
    def value(self) -> str:
        return choice_value(self.provider.slug, self.model)


def choice_value(slug: str, model: str) -> str:
    """The value of a model picker's option. Forms look the value up among the options on
    offer rather than parse it, so model ids may contain any character."""
    return f"{slug}::{model}"


def _default_provider() -> Provider:
    base_url = settings.OPENAI_BASE_URL
    label = urlparse(base_url).netloc if base_url else "OpenAI"
    return Provider(
        slug=DEFAULT_SLUG,
        label=settings.CHAT_DEFAULT_PROVIDER_LABEL or label,
        base_url=base_url,
        api_key_env="OPENAI_API_KEY",
        settings_key=settings.OPENAI_API_KEY,
        models=(settings.CHAT_DEFAULT_MODEL,),
        default_model=settings.CHAT_DEFAULT_MODEL,
    )


def _offline_provider(label: str = "Offline demo") -> Provider:
    return Provider(
        slug=OFFLINE_SLUG,
        label=label,
        models=(OFFLINE_MODEL,),
        default_model=OFFLINE_MODEL,
        discover=False,
        offline=True,
    )


def _positive_int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ImproperlyConfigured(f"{where} must be a positive whole number of tokens.")
    return value


class _Lines:
    """Where things are in the file's text, to point at the line of a mistake: tomllib gives
    positions for syntax errors only."""

    _TABLE = re.compile(r"^\s*\[\[\s*providers\s*\]\]", re.MULTILINE)

    def __init__(self, text: str) -> None:
        self.text = text
        self.tables = [match.start() for match in self._TABLE.finditer(text)]

    def _line(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    def of(self, position: int, key: str = "") -> int | None:
        """The line of provider `position` (1-based), or of its `key` when given and found."""
        if position > len(self.tables):
            return None
        start = self.tables[position - 1]
        end = self.tables[position] if position < len(self.tables) else len(self.text)
        if key:
            found = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", re.MULTILINE)
            match = found.search(self.text, start, end)
            if match:
                return self._line(match.start())
        return self._line(start)


@dataclass
class _Place:
    """Where a provider's mistake is: the file, the line, and the provider once its slug is
    known."""

    source: str
    lines: _Lines
    position: int
    slug: str = ""

    def __call__(self, key: str = "") -> str:
        line = self.lines.of(self.position, key)
        provider = f"provider {self.slug!r}" if self.slug else ""
        if not line:
            return f"{self.source}, {provider or f'provider {self.position}'}"
        return f"{self.source}, line {line}" + (f": {provider}" if provider else "")


def _unknown_key(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}."
    return f"unknown key `{key}` ({hint})"


def parse_providers(
    data: dict, source: str = "CHAT_PROVIDERS_FILE", text: str = ""
) -> list[Provider]:
    """The providers described by a parsed TOML document (its `[[providers]]` tables); `text`,
    the document itself, lets a mistake name its line."""
    lines = _Lines(text)
    for key in data:
        if key != "providers":
            raise ImproperlyConfigured(f"{source}: {_unknown_key(key, ('providers',))}")
    entries = data.get("providers", [])
    if not isinstance(entries, list):
        raise ImproperlyConfigured(f"{source}: `providers` must be an array of tables.")
    providers = []
    for position, entry in enumerate(entries, start=1):
        where = _Place(source, lines, position)
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"{where()}: must be a table ([[providers]]).")
        if "api_key" in entry:
            raise ImproperlyConfigured(
                f"{where('api_key')}: never put a key in the file; name its environment variable "
                "in `api_key_env` instead."
            )
        for key in entry:
            if key not in PROVIDER_KEYS:
                raise ImproperlyConfigured(f"{where(key)}: {_unknown_key(key, PROVIDER_KEYS)}")
        slug = str(entry.get("slug", OFFLINE_SLUG if entry.get("offline") else ""))
        if not _SLUG.match(slug):
            raise ImproperlyConfigured(
                f"{where('slug')}: `slug` must be lower-case letters, digits, - or _ "
                f"(got {slug!r})."
            )
        where.slug = slug
        windows = entry.get("context_windows", {})
        if not isinstance(windows, dict):
            raise ImproperlyConfigured(
                f"{where('context_windows')}: `context_windows` must be a table."
            )
        context = {
            "context_windows": {
                str(model): _positive_int(
                    tokens,
                    f"{where('context_windows')}: context window of {model!r}",
                )
                for model, tokens in windows.items()
            },
            "context_window": _positive_int(
                entry["context_window"],
                f"{where('context_window')}: context_window",
            )
            if "context_window" in entry
            else 0,
        }
        if entry.get("offline"):
            offline = _offline_provider(str(entry.get("label") or "Offline demo"))
            providers.append(replace(offline, slug=slug, **context))
            continue
        base_url = str(entry.get("base_url", "")).strip()
        if not base_url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(f"{where('base_url')}: `base_url` must be an http(s) URL.")
        models = entry.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ImproperlyConfigured(f"{where('models')}: `models` must be a list of model ids.")
        default_model = str(entry.get("default_model") or (models[0] if models else ""))
        if not default_model:
            raise ImproperlyConfigured(f"{where()}: set `default_model` or list `models`.")
        providers.append(
            Provider(
                slug=slug,
                label=str(entry.get("label") or slug),
                base_url=base_url,
                api_key_env=str(entry.get("api_key_env", "")),
                models=tuple(models),
                default_model=default_model,
                discover=bool(entry.get("discover", True)),
                **context,
            )
        )
    slugs = [provider.slug for provider in providers]
    duplicates = {slug for slug in slugs if slugs.count(slug) > 1}
    if duplicates or DEFAULT_SLUG in slugs:
        taken = ", ".join(sorted(duplicates | ({DEFAULT_SLUG} & set(slugs))))
        raise ImproperlyConfigured(
            f"{source}: slugs must be unique, and `default` is the OPENAI_* provider's: {taken}."
        )
    return providers


@lru_cache(maxsize=8)
def _providers_from_file(path: str, modified: tuple[int, int]) -> tuple[Provider, ...]:
    source = f"CHAT_PROVIDERS_FILE {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ImproperlyConfigured(f"{source}: {error}") from error
    return tuple(parse_providers(data, source=source, text=text))


def _read_providers_file(path: str) -> tuple[Provider, ...]:
    try:
        status = Path(path).stat()
    except OSError as error:
        raise ImproperlyConfigured(f"CHAT_PROVIDERS_FILE {path}: {error}") from error
    return _providers_from_file(path, (status.st_mtime_ns, status.st_size))


def _assemble(from_file: tuple[Provider, ...]) -> dict[str, Provider]:
    providers: list[Provider] = []
    if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
        providers.append(_default_provider())
    providers.extend(from_file)
    if not providers:
        providers.append(_offline_provider())
    by_slug = {provider.slug: provider for provider in providers}
    chosen = settings.CHAT_DEFAULT_PROVIDER
    if chosen and chosen not in by_slug:
        raise ImproperlyConfigured(
            f"CHAT_DEFAULT_PROVIDER is {chosen!r}, but no provider has that slug; the "
            f"configured ones are: {', '.join(by_slug)}."
        )
    return by_slug


# By path: the providers of the file's last good version, and the mistake of its current one.
# A process that started with a good file keeps serving its providers while the file is broken.
_last_good: dict[str, tuple[Provider, ...]] = {}
_problems: dict[str, str] = {}


def check_configuration() -> dict[str, Provider]:
    """Every provider on offer, from the file as it is now; raises ImproperlyConfigured for
    any mistake. Run at start (system checks), it keeps the file as the last good version."""
    path = settings.CHAT_PROVIDERS_FILE
    from_file = _read_providers_file(path) if path else ()
    providers = _assemble(from_file)
    if path:
        _last_good[path] = from_file
        if _problems.pop(path, None):
            logger.info("CHAT_PROVIDERS_FILE %s is good again.", path)
    return providers


def configured() -> dict[str, Provider]:
    """Every provider on offer, by slug, in the order of the picker.

    A providers file broken while the site runs is reported (logged once, shown to staff by
    `problem()`) and its last good version stays in use: pages, sign-in and the admin keep
    working. Without a last good version (a process starting), the mistake is raised.
    """
    try:
        return check_configuration()
    except ImproperlyConfigured as error:
        path = settings.CHAT_PROVIDERS_FILE
        if path not in _last_good:
            raise
        if _problems.get(path) != str(error):
            logger.error("%s. Still using its last good version.", error)
            _problems[path] = str(error)
        return _assemble(_last_good[path])


def problem() -> str:
    """The mistake in the providers file that the site is running despite, if any."""
    configured()
    return _problems.get(settings.CHAT_PROVIDERS_FILE, "")


def get(slug: str) -> Provider | None:
    """The provider of this slug; the site's default provider for an empty slug."""
    if not slug:
        return default_provider()
    return configured().get(slug)


def context_window(slug: str, model: str) -> int:
    """The context window of `model` at the provider of this slug, in tokens; the site's
    CHAT_CONTEXT_WINDOW when the provider is gone from the configuration."""
    chosen = get(slug)
    return chosen.context_window_for(model) if chosen else settings.CHAT_CONTEXT_WINDOW


def default_provider() -> Provider:
    providers = configured()
    return providers.get(settings.CHAT_DEFAULT_PROVIDER) or next(iter(providers.values()))
