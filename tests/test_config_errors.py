"""A configuration mistake stops manage.py, daphne and dev.py at start with one line that names
the variable or the service and says what to fix: no traceback, no waiting on a pool.

Each test runs a new process with only the environment it gives, as a newcomer's shell would.
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from chatsite import startup
from tests.support.fresh_clone import make_clone, newcomer_environment
from tests.support.live import free_port

ROOT = Path(settings.BASE_DIR)
# A PostgreSQL URL that is never connected to: settings are read, nothing more.
UNUSED_POSTGRES = "postgres://chatsite@127.0.0.1:5432/chatsite"


def run(*command: str, cwd: Path = ROOT, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=newcomer_environment(**environment),
        capture_output=True,
        text=True,
        timeout=120,
    )


def manage_py(*args: str, **environment: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "manage.py", *args, **environment)


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command printed; fails unless it printed exactly one."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [("createsuperuser",), ("makemigrations", "--check"), ("migrate",)],
)
@pytest.mark.live
def test_without_a_secret_key_manage_py_says_how_to_set_one(command: tuple[str, ...]) -> None:
    line = refusal(manage_py(*command))

    assert line.startswith("SECRET_KEY must be set when DEBUG is off: ")
    assert "`python3 dev.py manage <command>`" in line
    assert "in production set SECRET_KEY" in line


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("DATABASE_POOL_MAX", "ten", "must be an integer, got 'ten'."),
        ("CHAT_MAX_REPLIES", "1e3", "must be an integer, got '1e3'."),
        ("CHAT_FLUSH_SECONDS", "soon", "must be a finite number of seconds, got 'soon'."),
        (
            "SECURE_COOKIES",
            "ture",
            "must be one of 1, true, yes, on or 0, false, no, off, got 'ture'.",
        ),
        # Numbers that passed `check`, then broke every send, handshake or reply at run time.
        ("CHAT_STALE_SECONDS", "nan", "must be a finite number of seconds, got 'nan'."),
        ("CHAT_SOCKET_RECHECK_SECONDS", "inf", "must be a finite number of seconds, got 'inf'."),
        ("CHAT_FLUSH_SECONDS", "NaN", "must be a finite number of seconds, got 'NaN'."),
        ("CHAT_SHUTDOWN_GRACE_SECONDS", "inf", "must be a finite number of seconds, got 'inf'."),
        ("CHAT_STALE_SECONDS", "1e12", "must be more than 0 and up to 86400 seconds, got '1e12'."),
        ("OPENAI_TIMEOUT", "0", "must be more than 0 and up to 86400 seconds, got '0'."),
        ("CHAT_OFFLINE_TOKEN_DELAY", "-1", "must be from 0 up to 86400 seconds, got '-1'."),
        ("CHAT_MAX_SOCKETS_PER_USER", "1e7", "must be an integer, got '1e7'."),
        (
            "CHAT_MAX_SOCKETS_PER_USER",
            "10000000",
            "must be an integer from 0 to 1000, got '10000000'.",
        ),
        ("CHAT_PAGE_MESSAGES", "0", "must be an integer from 1 to 10000, got '0'."),
        ("CHAT_MAX_REPLIES", "-5", "must be an integer at least 1, got '-5'."),
        ("DATABASE_POOL_MIN", "20", "must be an integer from 0 to 10, got '20'."),
    ],
)
@pytest.mark.live
def test_a_malformed_or_absurd_variable_is_named_with_its_value(
    variable: str, value: str, complaint: str
) -> None:
    result = manage_py("check", SECRET_KEY="x", DATABASE_URL=UNUSED_POSTGRES, **{variable: value})

    assert refusal(result) == f"{variable} {complaint}"


@pytest.mark.live
def test_a_database_url_of_an_unknown_kind_is_named() -> None:
    result = manage_py("check", SECRET_KEY="x", DATABASE_URL="postgress://chatsite@db/chatsite")

    assert refusal(result).startswith("DATABASE_URL is not usable: Scheme 'postgress://'")


@pytest.mark.live
def test_daphne_refuses_to_start_in_one_line() -> None:
    result = run(
        sys.executable,
        "-m",
        "daphne",
        "-p",
        str(free_port()),
        "chatsite.asgi:application",
        SECRET_KEY="x",
        DATABASE_POOL_MAX="ten",
        DATABASE_URL=UNUSED_POSTGRES,
    )

    assert refusal(result) == "DATABASE_POOL_MAX must be an integer, got 'ten'."


@pytest.mark.live
def test_a_database_that_is_not_there_is_named_at_once() -> None:
    port = free_port()

    result = manage_py(
        "migrate", SECRET_KEY="x", DATABASE_URL=f"postgres://chatsite@127.0.0.1:{port}/chatsite"
    )

    assert refusal(result) == (
        f"Cannot connect to PostgreSQL at 127.0.0.1:{port} as role chatsite: Connection refused. "
        "Check DATABASE_URL."
    )


@pytest.mark.live
def test_a_role_the_database_does_not_know_is_named_with_the_servers_reason() -> None:
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL: run the tests with DATABASE_URL=postgres://...")
    where = f"{database['HOST'] or 'localhost'}:{database['PORT'] or 5432}"
    url = f"postgres://no_such_role:wrong@{where}/{database['NAME']}"

    line = refusal(manage_py("createsuperuser", SECRET_KEY="x", DATABASE_URL=url))

    assert line.startswith(f"Cannot connect to PostgreSQL at {where} as role no_such_role: ")
    assert '"no_such_role"' in line
    assert line.endswith(". Check DATABASE_URL.")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_clone(tmp_path_factory.mktemp("config-errors") / "chatsite")


@pytest.mark.live
def test_dev_py_run_stops_in_one_line_when_the_database_is_not_there(clone: Path) -> None:
    port = free_port()

    result = run(
        "python3",
        "dev.py",
        "run",
        cwd=clone,
        PORT=str(free_port()),
        DATABASE_URL=f"postgres://chatsite@127.0.0.1:{port}/chatsite",
    )

    assert refusal(result) == (
        f"Cannot connect to PostgreSQL at 127.0.0.1:{port} as role chatsite: Connection refused. "
        "Check DATABASE_URL."
    )
    assert "running" not in result.stdout


@pytest.mark.live
def test_a_production_server_refuses_to_start_before_collectstatic(clone: Path) -> None:
    result = run(
        sys.executable,
        "-m",
        "chatsite.serve",
        "-p",
        str(free_port()),
        "chatsite.asgi:application",
        cwd=clone,
        SECRET_KEY="x",
    )

    assert refusal(result) == (
        "Static files are not collected: run `manage.py collectstatic --noinput` (see README)."
    )


def test_the_server_starts_once_the_static_files_are_collected_where_it_serves_them(
    tmp_path: Path,
) -> None:
    with override_settings(STATIC_ROOT=tmp_path):
        with pytest.raises(ImproperlyConfigured, match=r"^Static files are not collected: "):
            startup.check_static_files()

        call_command("collectstatic", "--noinput", verbosity=0)

        startup.check_static_files()


def test_a_development_server_needs_no_collected_static_files(tmp_path: Path) -> None:
    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    with override_settings(STATIC_ROOT=tmp_path, STORAGES=storages):
        startup.check_static_files()
