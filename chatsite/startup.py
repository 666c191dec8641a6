"""What a process checks before it starts work, so that a configuration mistake is one line
naming the setting to fix rather than a traceback, or a page that fails later.

Each raises ImproperlyConfigured; manage.py and asgi.py print it as one line and exit.
"""

import re

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

# Seconds to wait for PostgreSQL at start: the pool's own timeout (10 s) hides the cause.
DATABASE_CONNECT_TIMEOUT = 5


def check_configuration() -> None:
    """Django's system checks, as `runserver` runs them before serving (daphne does not): an
    error, such as a mistake in CHAT_PROVIDERS_FILE, refuses to start."""
    errors = [message for message in checks.run_checks() if message.is_serious()]
    if errors:
        raise ImproperlyConfigured(" ".join(error.msg for error in errors))


def check_static_files() -> None:
    """With DEBUG off, pages find their CSS and scripts through the manifest `collectstatic`
    writes: without it every page is a 500. Not a system check: `collectstatic` runs those. Run
    before the app is built, whose static files middleware warns first about the missing folder."""
    from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage

    if isinstance(staticfiles_storage, ManifestFilesMixin) and not (
        staticfiles_storage.manifest_storage.exists(staticfiles_storage.manifest_name)
    ):
        raise ImproperlyConfigured(
            "Static files are not collected: run `manage.py collectstatic --noinput` (see README)."
        )


def _connection_failure(error: Exception) -> str:
    """The server's reason from a psycopg connection error: its last `failed: ...` part."""
    reason = re.split(r"failed: ", str(error))[-1].strip().splitlines()[0]
    return re.sub(r"^FATAL:\s+", "", reason)


def check_database() -> None:
    """Connect to PostgreSQL once, straight and briefly, outside the pool."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    import psycopg

    params = connection.get_connection_params()
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    role = params.get("user") or "(your login name)"
    try:
        psycopg.connect(**params, connect_timeout=DATABASE_CONNECT_TIMEOUT).close()
    except psycopg.OperationalError as error:
        raise ImproperlyConfigured(
            f"Cannot connect to PostgreSQL at {where} as role {role}: "
            f"{_connection_failure(error)}. Check DATABASE_URL."
        ) from None
