"""Deployment: the production profile README documents passes `check --deploy` and serves
HTTPS-only responses; every response carries the security headers and a Content Security
Policy without inline scripts. That the pages, the chat with its websocket and the admin work
under that policy in a real browser is tests/browser/test_content_security_policy.py.
"""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx2
import pytest
from django.conf import settings
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse

from accounts.models import User
from conversations.models import Message
from tests.support.live import Daphne
from tests.support.visitors import PASSWORD
from tests.support.xss import executable_markup, parse

ROOT = Path(settings.BASE_DIR)


# --------------------------------------------------------------------------- #
# The production profile, as README documents it
# --------------------------------------------------------------------------- #


def documented_block() -> list[str]:
    """The lines of README's production example."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running in production", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0].splitlines()


def documented_environment() -> list[str]:
    """The lines of README's production example that set the environment: its secret key file,
    made once and read, and its `export` lines."""
    lines = [
        line for line in documented_block() if "secret.env" in line or line.startswith("export ")
    ]
    assert any(line.startswith("export ") for line in lines), "README exports no settings"
    return lines


def documented_settings() -> dict[str, str]:
    """The profile's exported values."""
    values = {}
    for line in documented_environment():
        if line.startswith("export "):
            for word in shlex.split(line, comments=True)[1:]:
                name, _, value = word.partition("=")
                values[name] = value
    return values


def run_in_production_profile(*command: str, home: Path) -> subprocess.CompletedProcess:
    """Run a command in a shell that has run README's environment lines, and nothing else, in
    the directory `home` (where the secret key's file is kept)."""
    script = "\n".join([*documented_environment(), f"cd {shlex.quote(str(ROOT))}", 'exec "$@"'])
    return subprocess.run(
        ["bash", "-c", script, "production", *command],
        cwd=home,
        env={"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "chatsite.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.live
def test_the_documented_secret_key_is_made_once_and_kept_for_every_process(tmp_path) -> None:
    report = "from django.conf import settings; print(settings.SECRET_KEY)"

    first, restarted = (
        run_in_production_profile(sys.executable, "-c", report, home=tmp_path) for _ in range(2)
    )

    assert first.returncode == restarted.returncode == 0, first.stderr + restarted.stderr
    assert len(first.stdout.strip()) >= 50
    assert restarted.stdout == first.stdout
    assert (tmp_path / "secret.env").stat().st_mode & 0o777 == 0o600


def test_the_documented_database_and_role_are_created_before_use() -> None:
    database = urlparse(documented_settings()["DATABASE_URL"])
    block = documented_block()
    migrate = block.index(".venv/bin/python manage.py migrate")

    assert f"sudo -u postgres createuser --pwprompt {database.username}" in block[:migrate]
    assert (
        f"sudo -u postgres createdb --owner={database.username} {database.path[1:]}"
        in block[:migrate]
    )


def test_the_documented_servers_are_named_as_the_proxys_upstreams_not_as_addresses() -> None:
    """With ALLOWED_HOSTS and SECURE_SSL_REDIRECT set, a browser at 127.0.0.1:8001 is refused
    or redirected: only the proxy talks to these ports."""
    servers = [line for line in documented_block() if " -m chatsite.serve " in line]

    assert len(servers) == 2
    for line in servers:
        comment = line.partition("#")[2]
        assert "http://" not in comment, line
        assert "proxy" in comment, line


@pytest.mark.live
def test_daphne_says_where_it_listens() -> None:
    with Daphne("where-it-listens") as server:
        deadline = time.monotonic() + 10
        while "Listening on" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)

    assert f"Listening on TCP address 127.0.0.1:{server.port}" in server.log.read_text()


@pytest.mark.live
def test_the_documented_production_profile_passes_check_deploy(tmp_path) -> None:
    result = run_in_production_profile(
        sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING", home=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


@pytest.mark.live
def test_behind_the_documented_proxy_clients_are_told_apart_by_the_address_it_forwards(
    tmp_path,
) -> None:
    report = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SECURE_PROXY_SSL_HEADER, settings.ALLAUTH_TRUSTED_PROXY_COUNT)"
    )

    result = run_in_production_profile(sys.executable, "-c", report, home=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["('HTTP_X_FORWARDED_PROTO',", "'https')", "1"]


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_server_in_the_production_profile_serves_https_only() -> None:
    hardening = {
        name: value
        for name, value in documented_settings().items()
        if name.startswith("SECURE_") or name in {"BEHIND_TLS_PROXY", "TRUSTED_PROXY_COUNT"}
    }
    assert hardening["SECURE_SSL_REDIRECT"] == "1"

    with Daphne("production-profile", **hardening) as server:
        plain = httpx2.get(f"{server.url}/accounts/login/")
        proxied = httpx2.get(
            f"{server.url}/accounts/login/", headers={"X-Forwarded-Proto": "https"}
        )

    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")
    assert proxied.status_code == 200
    hsts = proxied.headers["Strict-Transport-Security"]
    assert f"max-age={hardening['SECURE_HSTS_SECONDS']}" in hsts
    assert "includeSubDomains" in hsts
    assert "preload" in hsts
    csrf_cookie = proxied.headers["Set-Cookie"]
    assert csrf_cookie.startswith(f"{settings.CSRF_COOKIE_NAME}=")
    assert "; Secure" in csrf_cookie
    assert "Content-Security-Policy" in proxied.headers


# --------------------------------------------------------------------------- #
# Headers and the Content Security Policy
# --------------------------------------------------------------------------- #


def policy(response) -> dict[str, list[str]]:
    directives = {}
    for directive in response["Content-Security-Policy"].split(";"):
        name, *sources = directive.split()
        directives[name] = sources
    return directives


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("staff@example.com", PASSWORD))
    return client


@pytest.mark.django_db
def test_every_kind_of_response_carries_the_security_headers(
    alice_client, staff, conversation, client
) -> None:
    responses = {
        "chat page": alice_client.get(conversation.get_absolute_url()),
        "htmx fragment": alice_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": ""}
        ),
        "sign-in page": client.get(reverse("account_login")),
        "redirect to sign in": client.get(reverse("home")),
        "not found": alice_client.get("/no/such/page/"),
        "static file": client.get(static("css/app.css")),
        "admin page": staff.get(reverse("admin:conversations_conversation_changelist")),
        "CSRF failure": Client(enforce_csrf_checks=True).post(reverse("account_login")),
    }

    for kind, response in responses.items():
        assert response.status_code < 500, kind
        assert response["X-Content-Type-Options"] == "nosniff", kind
        assert response["Referrer-Policy"] == "same-origin", kind
        assert response["X-Frame-Options"] == "DENY", kind
        assert response["Cross-Origin-Opener-Policy"] == "same-origin", kind
        directives = policy(response)
        assert directives["default-src"] == ["'self'"], kind
        assert directives["script-src"] == ["'self'"], kind
        assert directives["style-src"] == ["'self'"], kind
        assert directives["connect-src"] == ["'self'"], kind
        assert set(directives["img-src"]) <= {"'self'", "data:"}, kind
        assert directives["object-src"] == ["'none'"], kind
        assert directives["frame-ancestors"] == ["'none'"], kind
        assert directives["base-uri"] == ["'none'"], kind
        assert directives["form-action"] == ["'self'"], kind
        # The one relaxation: style attributes (table alignment in Markdown); never scripts.
        relaxed = {name for name, sources in directives.items() if "'unsafe-inline'" in sources}
        assert relaxed <= {"style-src-attr"}, kind
        assert not any("'unsafe-eval'" in sources for sources in directives.values()), kind


def inline_code(html: str) -> list[str]:
    """What a policy without inline scripts and styles would block: inline <script> and
    <style> elements, event attributes, style attributes outside Markdown table cells."""
    document = parse(html)
    found = [finding for finding in executable_markup(html, own_elements=frozenset({"svg"}))]
    found += [element.describe() for element in document.all("style")]
    in_markdown = {
        id(element)
        for body in document.all(class_name="message-body")
        for element in body.iter()
        if element.tag in {"td", "th"}
    }
    found += [
        element.describe()
        for element in document.iter()
        if "style" in element.attrs and id(element) not in in_markdown
    ]
    return found


@pytest.mark.django_db
def test_no_page_has_inline_scripts_or_styles(alice_client, staff, make_conversation) -> None:
    table = "| left | right |\n|:--|--:|\n| a | 1 |"
    conversation = make_conversation(history=[("user", table), ("assistant", table)])
    question = conversation.messages.get(role=Message.Role.USER)
    pages = {
        "new chat": alice_client.get(reverse("home")),
        "conversation": alice_client.get(conversation.get_absolute_url()),
        "edit form": alice_client.get(reverse("message_edit", args=[conversation.pk, question.pk])),
        "sign in": Client().get(reverse("account_login")),
        "sign up": Client().get(reverse("account_signup")),
        "password reset": Client().get(reverse("account_reset_password")),
        "email addresses": alice_client.get(reverse("account_email")),
        "password change": alice_client.get(reverse("account_change_password")),
        "sign out": alice_client.get(reverse("account_logout")),
        "not found": alice_client.get("/no/such/page/"),
        "admin index": staff.get(reverse("admin:index")),
        "admin list": staff.get(reverse("admin:conversations_conversation_changelist")),
        "admin change": staff.get(
            reverse("admin:conversations_conversation_change", args=[conversation.pk])
        ),
        "admin sign in": Client().get(reverse("admin:login"), follow=True),
    }
    server_error = (ROOT / "templates" / "500.html").read_text()

    for name, response in pages.items():
        assert response.status_code in (200, 404), name
        assert inline_code(response.content.decode()) == [], name
    assert inline_code(server_error) == []
    cells = [e for e in parse(pages["conversation"].content.decode()).iter() if e.tag == "td"]
    assert {cell.attrs.get("style") for cell in cells} == {"text-align:left", "text-align:right"}


def test_htmx_is_told_to_add_no_style_and_run_no_script() -> None:
    base = (ROOT / "templates" / "base.html").read_text()

    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", base)

    assert config, "base.html has no htmx-config"
    assert '"includeIndicatorStyles": false' in config[1]
    assert '"allowScriptTags": false' in config[1]
    assert '"allowEval": false' in config[1]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_static_files_are_served_by_the_async_stack_with_long_lived_caching(
    alice_async_client,
) -> None:
    stylesheet = await alice_async_client.get(static("css/app.css"))
    missing = await alice_async_client.get(settings.STATIC_URL + "css/no-such-file.css")
    page = await alice_async_client.get(reverse("home"))

    assert stylesheet.status_code == 200
    assert b".message" in b"".join(stylesheet.streaming_content)
    # Collected under a hashed name, so it can be cached for good.
    assert "immutable" in stylesheet["Cache-Control"]
    assert stylesheet["Content-Security-Policy"]
    assert missing.status_code == 404
    assert page.status_code == 200
