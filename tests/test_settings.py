"""Settings come from the environment; production refuses to start without a real secret key.

Each test starts a fresh Python with a clean environment, since settings are read at import.
"""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

REPORT_SETTINGS = """
import json
import django
from django.conf import settings

django.setup()
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SECRET_KEY": settings.SECRET_KEY,
    "DATABASE_ENGINE": settings.DATABASES["default"]["ENGINE"],
    "DATABASE_POOL": "pool" in settings.DATABASES["default"].get("OPTIONS", {}),
    "CHANNEL_LAYER": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "CACHE": settings.CACHES["default"]["BACKEND"],
    "OPENAI_BASE_URL": settings.OPENAI_BASE_URL,
    "CHAT_MAX_MESSAGE_CHARS": settings.CHAT_MAX_MESSAGE_CHARS,
}))
"""

pytestmark = pytest.mark.live


def start_django(**environment: str) -> subprocess.CompletedProcess:
    """Set Django up in a new process whose environment holds only what is given."""
    return subprocess.run(
        [sys.executable, "-c", REPORT_SETTINGS],
        cwd=settings.BASE_DIR,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            **environment,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def started_settings(**environment: str) -> dict:
    result = start_django(**environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_without_a_secret_key_production_refuses_to_start():
    result = start_django()

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_a_blank_secret_key_counts_as_none():
    result = start_django(SECRET_KEY="   ", DEBUG="false")

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_development_starts_without_a_secret_key():
    started = started_settings(DEBUG="1")

    assert started["DEBUG"] is True
    assert started["SECRET_KEY"]


def test_production_starts_with_a_secret_key_and_uses_it():
    started = started_settings(SECRET_KEY="a-real-secret-from-the-environment")

    assert started["DEBUG"] is False
    assert started["SECRET_KEY"] == "a-real-secret-from-the-environment"


def test_a_first_run_needs_no_services():
    started = started_settings(SECRET_KEY="x")

    assert started["DATABASE_ENGINE"] == "django.db.backends.sqlite3"
    assert started["CHANNEL_LAYER"] == "channels.layers.InMemoryChannelLayer"
    assert started["CACHE"] == "django.core.cache.backends.locmem.LocMemCache"
    assert started["OPENAI_BASE_URL"] == ""


def test_environment_variables_switch_on_real_services():
    started = started_settings(
        SECRET_KEY="x",
        DATABASE_URL="postgres://chat:pw@db.internal:5432/chatsite",
        REDIS_URL="redis://cache.internal:6379/0",
        OPENAI_BASE_URL="http://localhost:11434/v1",
        CHAT_MAX_MESSAGE_CHARS="5000",
    )

    assert started["DATABASE_ENGINE"] == "django.db.backends.postgresql"
    assert started["DATABASE_POOL"] is True
    assert started["CHANNEL_LAYER"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert started["CACHE"] == "django.core.cache.backends.redis.RedisCache"
    assert started["OPENAI_BASE_URL"] == "http://localhost:11434/v1"
    assert started["CHAT_MAX_MESSAGE_CHARS"] == 5000
