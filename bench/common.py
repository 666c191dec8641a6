"""What the benchmarks share: a scratch database, a signed-in user, and a table printer."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(database_url: str | None = None) -> str:
    """Configure Django in this process over a fresh scratch database; return its URL.

    DATABASE_URL and REDIS_URL from the environment win, so the same benchmark runs on
    PostgreSQL and Redis.
    """
    if database_url is None:
        scratch = Path(tempfile.mkdtemp(prefix="chatsite-bench-")) / "bench.sqlite3"
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}"
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.pop("DEBUG", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return database_url


def signed_in_session(email: str) -> tuple[object, str]:
    """A user (created if needed) and the key of a session signed in as them."""
    from django.test import Client

    from accounts.models import User

    user, _ = User.objects.get_or_create(email=email)
    client = Client()
    client.force_login(user)
    return user, client.cookies["sessionid"].value


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
