"""Settings for chatsite, read from the environment.

Every value has a safe default for a first run on a laptop: SQLite, an in-memory channel layer,
a local-memory cache and the built-in offline model. Production switches on real services with
environment variables (see the table in README.md).
"""

import logging
import math
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


# A mistake in a variable stops the process with one line naming the variable and what it takes
# (manage.py and chatsite/asgi.py print an ImproperlyConfigured raised here without a traceback).
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool = False) -> bool:
    value = env_str(name).lower()
    if not value:
        return default
    if value not in TRUE_WORDS | FALSE_WORDS:
        raise ImproperlyConfigured(
            f"{name} must be one of 1, true, yes, on or 0, false, no, off, got {value!r}."
        )
    return value in TRUE_WORDS


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    value = env_str(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ImproperlyConfigured(f"{name} must be an integer {bounds}, got {value!r}.")
    return number


# A duration longer than this is a mistake (a timedelta or a sleep overflows long before `inf`).
ONE_DAY = 86_400


def env_float(name: str, default: float, *, may_be_zero: bool = False) -> float:
    """A number of seconds, more than 0 (or 0, if `may_be_zero`) and at most ONE_DAY."""
    value = env_str(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name} must be a finite number of seconds, got {value!r}.")
    if number < 0 or (number == 0 and not may_be_zero) or number > ONE_DAY:
        lowest = "from 0" if may_be_zero else "more than 0 and"
        raise ImproperlyConfigured(
            f"{name} must be {lowest} up to {ONE_DAY} seconds, got {value!r}."
        )
    return number


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off: in development use `python3 dev.py run` "
            "or `python3 dev.py manage <command>`, which turn DEBUG on; in production set "
            "SECRET_KEY as README.md's *Running in production* shows."
        )
    # Development only: a fixed key is fine because DEBUG never runs in production.
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
CSRF_FAILURE_VIEW = "conversations.errors.csrf_failure"  # JSON under /api/, like every API answer

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials.apps.SimpleAppConfig",
    "allauth",
    "allauth.account",
    "accounts",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before WhiteNoise, so that static files carry these headers too.
    "chatsite.middleware.content_security_policy",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chatsite.middleware.StaticFilesMiddleware",
    # After static files, which keep their own policy; around everything else.
    "chatsite.middleware.private_responses_not_stored",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "chatsite.middleware.refuse_null_in_queries",
]

ROOT_URLCONF = "chatsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "conversations.context_processors.model_status",
                "conversations.views.theme.theme",
            ],
            "loaders": [
                (
                    "template_partials.loader.Loader",
                    [
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                "django.template.loaders.filesystem.Loader",
                                "django.template.loaders.app_directories.Loader",
                            ],
                        )
                    ],
                )
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    },
]

ASGI_APPLICATION = "chatsite.asgi.application"

# Database: SQLite by default; DATABASE_URL switches to PostgreSQL (psycopg 3). Under ASGI, Django
# advises CONN_MAX_AGE = 0 and its own pool: connections go back to the pool after each unit of
# work, so no connection is held while a reply streams.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
except ValueError as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not usable: {error}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "max_size": (pool_max := env_int("DATABASE_POOL_MAX", 10, minimum=1)),
        "min_size": env_int("DATABASE_POOL_MIN", 1, maximum=pool_max),
        "timeout": 10,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers and the single writer work at once; the busy timeout rides out short locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
    # A SQLite "connection" is a file handle in this process, not a server resource: keep it,
    # rather than reopening the file for every query run from async code.
    DATABASES["default"]["CONN_MAX_AGE"] = None

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channels and cache: Redis when REDIS_URL is set, in-process otherwise (one process only).
REDIS_URL = env_str("REDIS_URL")
# Messages a websocket's channel may hold before new ones are dropped, with the in-process layer
# (the default is 100, about three seconds of reply text for a page that falls behind). Watchers
# recover from drops, but fewer is better.
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", 1000, minimum=1)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer pushes each message to the processes subscribed to it. The
            # default channels-redis layer keeps each process's inbox in a sorted set capped at
            # `capacity`, polled one message per round trip: with 500 replies streaming it
            # dropped group messages and lost replies (docs/performance.md).
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # redis-py 8 gives up on any read after 5 s by default, and caps a pool at 100
                # connections, failing past that.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 30,
                        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 2000, minimum=1),
                    }
                ],
                "prefix": env_str("REDIS_PREFIX", "chatsite"),
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("REDIS_PREFIX", "chatsite"),
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
    # Personal API tokens, for the JSON API only: `authenticate(request, api_token=key)`.
    "accounts.backends.ApiTokenBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

# django-allauth 65: email and password, no usernames.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
# Verifying the address people sign up with: `mandatory` in production (README), which also
# keeps signup from telling whether an address has an account.
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "none")
ACCOUNT_PREVENT_ENUMERATION = True
# An address added to an account is stored only once the link mailed to it is followed
# (accounts/email_addresses.py): until then it signs no one in, and stays free for its owner.
ACCOUNT_FORMS = {
    "add_email": "accounts.forms.AddEmailForm",
    "signup": "accounts.forms.SignupForm",
}
ACCOUNT_LOGIN_ON_PASSWORD_RESET = True
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_RATE_LIMITS = {
    # Per client, and per account *from that client* (accounts/adapter.py): a stranger's
    # guesses lock out the stranger, not the account's owner.
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    # Links mailed to added addresses: one per account and address every 3 minutes (the link
    # stays good for days), so another account's tries never silence this one's; and links to
    # at most 5 addresses an hour per account.
    "add_email": "1/3m/key",
    "add_email_per_account": "5/h/user",
}

EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65_535)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "chatsite <noreply@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Security. Behind a TLS-terminating proxy set SECURE_COOKIES=1 (and SECURE_SSL_REDIRECT=1);
# README lists the whole production profile, which `manage.py check --deploy` passes.
SECURE_COOKIES = env_bool("SECURE_COOKIES")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
if env_bool("BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Every request arrives from the proxy's address: login rate limits per IP would count all
    # users as one. The proxy appends the client's address to X-Forwarded-For; trust that hop.
    ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# The model. With neither OPENAI_API_KEY nor OPENAI_BASE_URL set, the offline model answers.
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", 60.0)
OPENAI_CONNECT_TIMEOUT = env_float("OPENAI_CONNECT_TIMEOUT", 10.0)
OPENAI_MAX_RETRIES = env_int("OPENAI_MAX_RETRIES", 2)
# Connections a process may open to each provider at once: one per streaming reply.
OPENAI_MAX_CONNECTIONS = env_int("OPENAI_MAX_CONNECTIONS", 1000, minimum=1)
CHAT_DEFAULT_MODEL = env_str("CHAT_DEFAULT_MODEL", "gpt-4o-mini")
CHAT_SYSTEM_PROMPT = env_str("CHAT_SYSTEM_PROMPT")
# More providers, from a TOML file (see README.md); which one new conversations use by default.
CHAT_PROVIDERS_FILE = env_str("CHAT_PROVIDERS_FILE")
CHAT_DEFAULT_PROVIDER = env_str("CHAT_DEFAULT_PROVIDER")
CHAT_DEFAULT_PROVIDER_LABEL = env_str("CHAT_DEFAULT_PROVIDER_LABEL")
CHAT_MODELS_CACHE_SECONDS = env_int("CHAT_MODELS_CACHE_SECONDS", 600, maximum=ONE_DAY)
# Context window (tokens) of a model whose provider does not say, and room kept for the reply.
CHAT_CONTEXT_WINDOW = env_int("CHAT_CONTEXT_WINDOW", 8192, minimum=1)
CHAT_REPLY_RESERVE_TOKENS = env_int("CHAT_REPLY_RESERVE_TOKENS", 1024)
# Name each conversation with the model after its first reply (not with the offline model).
CHAT_AUTO_TITLE = env_bool("CHAT_AUTO_TITLE", True)
# Limits and cadences of a streamed reply.
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 100_000, minimum=1)
# A form-encoded character takes up to 12 bytes (4 UTF-8 bytes, each sent as %XX): the longest
# message allowed must fit in a request body, whatever its script.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, 12 * CHAT_MAX_MESSAGE_CHARS + 65_536)
# A chat page shows this many of the newest messages; older ones load on demand.
CHAT_PAGE_MESSAGES = env_int("CHAT_PAGE_MESSAGES", 100, minimum=1, maximum=10_000)
# Tokens a user may spend per day (in TIME_ZONE); 0 is no limit. A user's own quota wins.
CHAT_DAILY_TOKEN_QUOTA = env_int("CHAT_DAILY_TOKEN_QUOTA", 0)
# Replies one process streams at once; one more is refused at once (the API: 503 and
# Retry-After). More than OPENAI_MAX_CONNECTIONS would only wait for a connection upstream.
CHAT_MAX_REPLIES = min(env_int("CHAT_MAX_REPLIES", 1000, minimum=1), OPENAI_MAX_CONNECTIONS)
# Replies one user may have streaming at once, across all processes; 0 is no cap.
CHAT_MAX_REPLIES_PER_USER = env_int("CHAT_MAX_REPLIES_PER_USER", 3)
CHAT_DELTA_BATCH_SECONDS = env_float("CHAT_DELTA_BATCH_SECONDS", 0.03, may_be_zero=True)
CHAT_FLUSH_SECONDS = env_float("CHAT_FLUSH_SECONDS", 1.0)
CHAT_STALE_SECONDS = env_float("CHAT_STALE_SECONDS", 15.0)
# On SIGTERM, replies being generated get this long to finish before they are stored as
# interrupted (chatsite/serve.py). The whole stop then fits in docker's default 10 s.
CHAT_SHUTDOWN_GRACE_SECONDS = env_float("CHAT_SHUTDOWN_GRACE_SECONDS", 5.0, may_be_zero=True)
CHAT_OFFLINE_TOKEN_DELAY = env_float("CHAT_OFFLINE_TOKEN_DELAY", 0.02, may_be_zero=True)
# A reply streamed by the JSON API sends a comment after this long without text, so proxies and
# clients do not take a slow model for a dead connection.
CHAT_API_KEEPALIVE_SECONDS = env_float("CHAT_API_KEEPALIVE_SECONDS", 15.0)
# An open chat websocket checks its session again this often (logout, a password change and a
# deactivation close it at once anyway); a user may hold this many open at once (0: no cap).
CHAT_SOCKET_RECHECK_SECONDS = env_float("CHAT_SOCKET_RECHECK_SECONDS", 60.0)
CHAT_MAX_SOCKETS_PER_USER = env_int("CHAT_MAX_SOCKETS_PER_USER", 30, maximum=1000)
if CHAT_FLUSH_SECONDS * 2 > CHAT_STALE_SECONDS:
    # A generator beats at each flush at the latest: live replies would be taken for dead.
    raise ImproperlyConfigured("CHAT_STALE_SECONDS must be at least twice CHAT_FLUSH_SECONDS.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "filters": {
        # Of daphne's lines at start, only the one that says where it listens.
        "where_daphne_listens": {
            "()": "django.utils.log.CallbackFilter",
            "callback": lambda record: (
                record.levelno >= logging.WARNING or record.msg.startswith("Listening on")
            ),
        }
    },
    "loggers": {
        "daphne": {"level": "WARNING"},
        "daphne.server": {"level": "INFO", "filters": ["where_daphne_listens"]},
    },
}
