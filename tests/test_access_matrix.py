"""Who reaches what: every URL and websocket route of the project, tried by the owner of the
data (Alice), another user (Bob) and an anonymous visitor, and every route's POST tried without
a CSRF token.

Routes are read from the resolvers, so a new one is tried as soon as it exists, and one that
ACCESS does not classify fails until someone decides who may reach it. Route parameters are
filled with Alice's real objects, so a refusal means "not yours", never "no such thing": the
entitled party reaching each route proves the parameters right.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlparse

import pytest
from allauth.account.models import EmailAddress
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

from accounts.models import ApiToken, User
from chatsite.asgi import application
from conversations.models import Conversation, Message, ShareLink, UsageEntry
from conversations.replies import announce
from conversations.sockets.routing import websocket_urlpatterns
from tests.support.sockets import SITE_ORIGIN
from tests.support.visitors import PASSWORD

# Who may reach a route.
OWNER = "owner"  # one conversation's data: its owner only; anyone else is told it does not exist
SIGNED_IN = "signed-in"  # any signed-in user, each about their own account and conversations
PUBLIC = "public"  # anyone: signing in, signing up, resetting a password; shows no one's data
STAFF = "staff"  # the Django admin: staff only; everyone else is sent to the admin login
NOBODY = "nobody"  # the websocket catch-all: refused to everyone, like a 404
LINK_HOLDER = "link-holder"  # a share link: anyone holding it reads that one conversation only
# The JSON API: as OWNER and SIGNED_IN, but a caller without credentials gets a JSON 401 (with
# `WWW-Authenticate: Bearer`) instead of the sign-in page, and every answer is JSON, never HTML.
API_OWNER = "api-owner"
API_SIGNED_IN = "api-signed-in"

ACCESS = {
    # conversations
    "home": SIGNED_IN,
    "conversation_start": SIGNED_IN,
    "conversation": OWNER,
    "message_send": OWNER,
    "reply_stop": OWNER,
    "reply_regenerate": OWNER,
    "message_detail": OWNER,
    "message_edit": OWNER,
    "earlier_messages": OWNER,
    "conversation_rename": OWNER,
    "conversation_label": OWNER,
    "conversation_pin": OWNER,
    "conversation_unpin": OWNER,
    "conversation_archive": OWNER,
    "conversation_unarchive": OWNER,
    "conversation_delete": OWNER,
    "conversation_list": SIGNED_IN,
    "archive": SIGNED_IN,
    "search": SIGNED_IN,
    "conversation_settings": OWNER,
    "conversation_export_markdown": OWNER,
    "conversation_export_json": OWNER,
    "export_all": SIGNED_IN,
    "share_create": OWNER,
    "share_revoke": OWNER,
    "share": LINK_HOLDER,
    "ws_chat": SIGNED_IN,
    "ws_conversation": OWNER,
    "ws_unknown": NOBODY,
    # accounts
    "account_settings": SIGNED_IN,
    "email_add_confirm": SIGNED_IN,
    # usage and comfort
    "usage": SIGNED_IN,
    "theme_set": PUBLIC,  # a choice of the browser, kept in a cookie; touches no one's data
    # JSON API and its documentation; unknown /api/ paths answer a JSON 404 to anyone
    "api_conversations": API_SIGNED_IN,
    "api_conversation": API_OWNER,
    "api_messages": API_OWNER,
    "api_stop": API_OWNER,
    "api_openapi": PUBLIC,
    "api_docs": PUBLIC,
    "api_unknown": PUBLIC,
    # personal API tokens
    "api_tokens": SIGNED_IN,
    "api_token_revoke": OWNER,
    # django-allauth
    "account_login": PUBLIC,
    "account_logout": SIGNED_IN,
    "account_inactive": PUBLIC,
    "account_signup": PUBLIC,
    "account_reauthenticate": SIGNED_IN,
    "account_email": SIGNED_IN,
    "account_email_verification_sent": PUBLIC,
    "account_change_password": SIGNED_IN,
    "account_set_password": SIGNED_IN,
    "account_reset_password": PUBLIC,
    "account_confirm_login_code": PUBLIC,
    "account_confirm_email": PUBLIC,
    "account_reset_password_from_key_done": PUBLIC,
    "account_reset_password_from_key": PUBLIC,
    "account_reset_password_done": PUBLIC,
    # The admin's sign-in: the site's, for anyone (accounts.views.admin_login); every other
    # admin route is STAFF (see access_of).
    "admin:login": PUBLIC,
}

SECRET_TITLE = "Alice private title 5c1e"
SECRET_QUESTION = "Alice private question 5c1e about the spare key"
SECRET_REPLY = "Alice private reply 5c1e: under the blue flowerpot"
SECRET_TOKEN_NAME = "Alice private token 5c1e"
ALICE_SECRETS = [
    SECRET_TITLE,
    SECRET_QUESTION,
    SECRET_REPLY,
    SECRET_TOKEN_NAME,
    "alice@example.com",
]

# A forged POST carries whatever the forms of the site would act on.
FORGED_POST = {
    "text": "Forged message",
    "title": "Forged title",
    "post": "yes",
    "login": "alice@example.com",
    "email": "mallory@example.com",
    "password": PASSWORD,
    "oldpassword": PASSWORD,
    "password1": "Forged-passw0rd-5c1e",
    "password2": "Forged-passw0rd-5c1e",
    "action_add": "1",
}


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or the pattern itself when the route has no name
    pattern: str  # the whole route from the site root, as declared
    callback: Callable
    parameters: tuple[str, ...]

    def __str__(self) -> str:
        return self.name


def _walk(
    patterns: list, prefix: str = "", namespace: str = "", parameters: tuple[str, ...] = ()
) -> Iterator[Route]:
    for entry in patterns:
        pattern = prefix + str(entry.pattern)
        names = parameters + tuple(entry.pattern.regex.groupindex)
        if isinstance(entry, URLResolver):
            inner = ":".join(filter(None, [namespace, entry.namespace]))
            yield from _walk(entry.url_patterns, pattern, inner, names)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            yield Route(name or pattern, pattern, entry.callback, names)


HTTP_ROUTES = list(_walk(get_resolver().url_patterns))
WEBSOCKET_ROUTES = list(_walk(websocket_urlpatterns))


def access_of(route: Route) -> str | None:
    if route.name in ACCESS:
        return ACCESS[route.name]
    if route.name.startswith("admin:") or route.pattern.startswith("admin/"):
        # The admin site wraps each of its views, and those of every ModelAdmin registered
        # later, in its staff check.
        return STAFF
    return None


_PARAMETER = re.compile(r"<(?:\w+:)?(?P<route>\w+)>|\(\?P<(?P<regex>\w+)>[^)]*\)")


@dataclass
class World:
    """Alice's conversation with a reply still streaming, so no POST of the matrix starts a
    generation; Bob and a staff user; one object of each model the admin manages."""

    alice: User
    bob: User
    staff: User
    conversation: Conversation
    question: Message
    reply: Message
    samples: dict[type[Model], Model]
    conversation_type_id: int

    def value_for(self, route: Route, parameter: str) -> object:
        simple = {
            "conversation_id": self.conversation.pk,
            "message_id": self.question.pk,
            "id": self.alice.pk,
            "app_label": "conversations",
            "url": "conversations/conversation",
            "key": "not-a-real-key",
            "uidb36": "1",
            "content_type_id": self.conversation_type_id,
            "token": self.samples[ShareLink].token,
            "token_id": self.samples[ApiToken].pk,
            "path": "v1/no/such/endpoint",
        }
        if parameter in simple:
            return simple[parameter]
        if parameter == "object_id":
            if "content_type_id" in route.parameters:
                return self.conversation.pk
            app_label, model_name = re.match(r"admin/(\w+)/(\w+)/", route.pattern).groups()
            model = apps.get_model(app_label, model_name)
            if model not in self.samples:
                pytest.fail(f"No sample {model.__name__} for {route.pattern}: add one to World")
            return self.samples[model].pk
        pytest.fail(f"No sample value for <{parameter}> in {route.pattern}: add one to World")

    def query_for(self, route: Route) -> str:
        """What a route needs after the `?` to answer its entitled visitor."""
        queries = {
            "earlier_messages": {"before": self.reply.pk},
            # Words of every secret: Bob searching them must find nothing of Alice's.
            "search": {"q": "5c1e"},
        }
        return urlencode(queries.get(route.name, {}))

    def url_for(self, route: Route) -> str:
        def fill(match: re.Match) -> str:
            return str(self.value_for(route, match["route"] or match["regex"]))

        path = "/" + _PARAMETER.sub(fill, route.pattern).replace("^", "").replace("$", "")
        if route not in WEBSOCKET_ROUTES:
            assert resolve(path).func is route.callback, f"{path} does not lead to {route}"
        query = self.query_for(route)
        return f"{path}?{query}" if query else path


@pytest.fixture
def world(alice: User, bob: User, make_conversation) -> World:
    staff = User.objects.create_superuser("staff@example.com", PASSWORD)
    conversation = make_conversation(title=SECRET_TITLE, history=[("user", SECRET_QUESTION)])
    question = conversation.messages.get()
    reply = conversation.messages.create(
        role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, content=SECRET_REPLY
    )
    email = EmailAddress.objects.create(user=alice, email=alice.email, primary=True)
    group = Group.objects.create(name="Alice's group")
    samples = {Conversation: conversation, Message: question, User: alice, EmailAddress: email}
    samples[Group] = group
    samples[ShareLink] = ShareLink.snapshot_of(conversation)
    samples[ApiToken] = ApiToken.issue(alice, SECRET_TOKEN_NAME)[0]
    samples[UsageEntry] = UsageEntry.objects.create(user=alice, reply_id=reply.pk, message=reply)
    conversation_type_id = ContentType.objects.get_for_model(Conversation).pk
    return World(alice, bob, staff, conversation, question, reply, samples, conversation_type_id)


def signed_in(user: User | None, **options) -> Client:
    client = Client(**options)
    if user is not None:
        client.force_login(user)
    return client


def redirects_to(response: HttpResponse, *paths: str) -> bool:
    return response.status_code == 302 and urlparse(response["Location"]).path in paths


def sent_to_sign_in(response: HttpResponse, *, admin: bool = False) -> bool:
    """Refused for want of a (staff) session: off to the sign-in page, to come back after."""
    location = urlparse(response.get("Location", ""))
    login = reverse("admin:login" if admin else "account_login")
    return response.status_code == 302 and location.path == login and "next=" in location.query


def read_body(response: HttpResponse) -> bytes:
    """The whole body, also of a response streamed by an async generator (as daphne reads it)."""
    if not response.streaming:
        return response.content

    async def read() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()


def shows_secrets(response: HttpResponse) -> list[str]:
    body = read_body(response).decode(errors="replace")
    return [secret for secret in ALICE_SECRETS if secret in body]


def refused(response: HttpResponse, access: str) -> bool:
    if access == STAFF:
        # The admin sends a logout without a staff session to its index, itself staff only.
        admin_index = reverse("admin:index")
        return sent_to_sign_in(response, admin=True) or redirects_to(response, admin_index)
    return response.status_code in (403, 404) or sent_to_sign_in(response)


def test_every_route_is_classified_and_every_classification_is_a_route() -> None:
    routes = HTTP_ROUTES + WEBSOCKET_ROUTES

    unclassified = [route.pattern for route in routes if not access_of(route)]
    stale = set(ACCESS) - {route.name for route in routes}

    assert unclassified == [], "Add these routes to ACCESS, deciding who may reach them"
    assert stale == set(), "ACCESS names routes that no longer exist"


def with_database(routes: list[Route]) -> list:
    """Async views hand work to channels' database_sync_to_async, which closes the connection
    a test inside one transaction keeps: their tests commit for real."""
    return [
        pytest.param(
            route,
            id=str(route),
            marks=pytest.mark.django_db(transaction=iscoroutinefunction(route.callback)),
        )
        for route in routes
    ]


def routes_for(access: str) -> list:
    return with_database([route for route in HTTP_ROUTES if access_of(route) == access])


def visit(url: str, **visitors: User | None) -> dict[str, dict[str, HttpResponse]]:
    """Each visitor's answers to a GET and to an empty POST of the URL, in a session of their
    own (a POST may sign them out)."""
    answers = {}
    for visitor, user in visitors.items():
        client = signed_in(user)
        answers[visitor] = {"GET": client.get(url), "POST": client.post(url, {})}
    return answers


def assert_no_secrets_for_others(answers: dict[str, dict[str, HttpResponse]], url: str) -> None:
    for visitor in ("bob", "anonymous"):
        for method, response in answers[visitor].items():
            assert shows_secrets(response) == [], f"{visitor} {method} {url}"


@pytest.mark.parametrize("route", routes_for(OWNER))
def test_only_the_owner_reaches_a_conversation(route: Route, world: World) -> None:
    url = world.url_for(route)

    answers = visit(url, alice=world.alice, bob=world.bob, anonymous=None)

    assert_no_secrets_for_others(answers, url)
    for method, response in answers["alice"].items():
        assert not refused(response, OWNER), f"the owner was refused: {method} {url}"
    assert any(response.status_code < 400 for response in answers["alice"].values())
    if answers["alice"]["GET"].status_code == 200:
        assert shows_secrets(answers["alice"]["GET"]), f"the owner sees nothing at {url}"
    for method, response in answers["bob"].items():
        # Another user's conversation does not exist for Bob; a method the route never takes
        # is refused first, which says nothing either.
        assert response.status_code in (404, 405), f"bob {method} {url}"
    for method, response in answers["anonymous"].items():
        assert sent_to_sign_in(response), f"anonymous {method} {url}"


@pytest.mark.parametrize("route", routes_for(SIGNED_IN))
def test_signed_in_pages_serve_each_user_only_their_own(route: Route, world: World) -> None:
    url = world.url_for(route)

    answers = visit(url, alice=world.alice, bob=world.bob, anonymous=None)

    assert_no_secrets_for_others(answers, url)
    for visitor in ("alice", "bob"):
        for method, response in answers[visitor].items():
            assert not refused(response, SIGNED_IN), f"{visitor} was refused: {method} {url}"
    for method, response in answers["anonymous"].items():
        # Signing out when signed out lands on the sign-in page too, with nothing to return to.
        assert redirects_to(response, reverse("account_login")), f"anonymous {method} {url}"


@pytest.mark.parametrize("route", routes_for(PUBLIC))
def test_public_pages_show_no_ones_data(route: Route, world: World) -> None:
    url = world.url_for(route)

    answers = visit(url, alice=world.alice, bob=world.bob, anonymous=None)

    assert_no_secrets_for_others(answers, url)
    for visitor, responses in answers.items():
        assert all(response.status_code < 500 for response in responses.values()), visitor


@pytest.mark.parametrize("route", routes_for(LINK_HOLDER))
def test_a_share_link_shows_its_conversation_and_nothing_else(
    route: Route, world: World, make_conversation
) -> None:
    other = make_conversation(title="Alice unshared title 5c1e", history=[("user", "unshared")])
    url = world.url_for(route)

    answers = visit(url, alice=world.alice, bob=world.bob, anonymous=None)

    for visitor, responses in answers.items():
        body = responses["GET"].content.decode()
        assert responses["GET"].status_code == 200, visitor
        # The reply is still being written: a link copies finished replies only.
        assert shows_secrets(responses["GET"]) == [SECRET_TITLE, SECRET_QUESTION]
        assert other.title not in body and str(other.pk) not in body, visitor
        assert responses["POST"].status_code == 405, visitor
    unknown = url.replace(world.samples[ShareLink].token, "not-a-real-token")
    assert signed_in(None).get(unknown).status_code == 404
    world.samples[ShareLink].revoked_at = world.samples[ShareLink].created_at
    world.samples[ShareLink].save(update_fields=["revoked_at"])
    assert signed_in(world.alice).get(url).status_code == 404


@pytest.mark.parametrize("route", routes_for(STAFF))
def test_the_admin_is_for_staff_only(route: Route, world: World) -> None:
    url = world.url_for(route)

    answers = visit(url, alice=world.alice, bob=world.bob, anonymous=None)
    staff = signed_in(world.staff).get(url)  # the admin's own writes are Django's to test

    assert_no_secrets_for_others(answers, url)
    for visitor, responses in answers.items():
        for method, response in responses.items():
            assert refused(response, STAFF), f"{visitor} {method} {url}"
    # Staff get the page, or the admin's own answer: 403 where even a superuser may not act
    # (messages cannot be added by hand), 405 for a logout by GET. A wrong object id would
    # show as a redirect to the admin index, which counts as refused.
    assert not refused(staff, STAFF), f"staff was refused: {url}"
    assert staff.status_code in (200, 301, 302, 403, 405), f"staff: {url}"


def visit_api(url: str, world: World) -> dict[str, dict[str, HttpResponse]]:
    """Each visitor's answers, Bob's twice: with his session and with his own API token."""
    answers = visit(url, alice=world.alice, bob=world.bob, anonymous=None)
    bob_script = Client(headers={"Authorization": f"Bearer {ApiToken.issue(world.bob, 'x')[1]}"})
    answers["bob-token"] = {"GET": bob_script.get(url), "POST": bob_script.post(url, {})}
    for visitor, responses in answers.items():
        for method, response in responses.items():
            assert response["Content-Type"] == "application/json", f"{visitor} {method} {url}"
    return answers


def refused_by_the_api(response: HttpResponse) -> bool:
    return response.status_code in (401, 403, 404)


def asked_for_credentials(response: HttpResponse) -> bool:
    return response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("route", routes_for(API_OWNER))
def test_only_the_owner_reaches_a_conversation_through_the_api(route: Route, world: World):
    url = world.url_for(route)

    answers = visit_api(url, world)

    for visitor in ("bob", "bob-token", "anonymous"):
        for method, response in answers[visitor].items():
            assert shows_secrets(response) == [], f"{visitor} {method} {url}"
    for method, response in answers["alice"].items():
        assert not refused_by_the_api(response), f"the owner was refused: {method} {url}"
        assert response.status_code < 500
    if answers["alice"]["GET"].status_code == 200:
        assert shows_secrets(answers["alice"]["GET"]), f"the owner sees nothing at {url}"
    for visitor in ("bob", "bob-token"):
        for method, response in answers[visitor].items():
            assert response.status_code in (404, 405), f"{visitor} {method} {url}"
    for method, response in answers["anonymous"].items():
        assert asked_for_credentials(response), f"anonymous {method} {url}"


@pytest.mark.parametrize("route", routes_for(API_SIGNED_IN))
def test_the_api_serves_each_user_only_their_own(route: Route, world: World) -> None:
    url = world.url_for(route)

    answers = visit_api(url, world)

    for visitor in ("bob", "bob-token", "anonymous"):
        for method, response in answers[visitor].items():
            assert shows_secrets(response) == [], f"{visitor} {method} {url}"
    for visitor in ("alice", "bob", "bob-token"):
        for method, response in answers[visitor].items():
            assert not refused_by_the_api(response), f"{visitor} was refused: {method} {url}"
            assert response.status_code < 500
    for method, response in answers["anonymous"].items():
        assert asked_for_credentials(response), f"anonymous {method} {url}"


def snapshot() -> dict[str, list[tuple]]:
    """Every row of every table, to show a request changed nothing at all."""
    return {
        model._meta.label: list(model.objects.order_by("pk").values_list())
        for model in apps.get_models()
    }


@pytest.mark.django_db
@pytest.mark.parametrize("route", HTTP_ROUTES, ids=str)
def test_a_post_without_a_csrf_token_is_refused_and_changes_nothing(
    route: Route, world: World
) -> None:
    """Every route, not only those that take a POST today: Django checks the token before any
    view runs, so a view that starts taking POSTs is covered already."""
    actor = {
        OWNER: world.alice,
        SIGNED_IN: world.alice,
        STAFF: world.staff,
        API_OWNER: world.alice,
        API_SIGNED_IN: world.alice,
    }.get(access_of(route))
    browser = signed_in(actor, enforce_csrf_checks=True)
    # The victim's browser holds a CSRF cookie; the forger cannot read it to copy the token.
    browser.get(reverse("home") if actor else reverse("account_login"))
    assert settings.CSRF_COOKIE_NAME in browser.cookies
    before = snapshot()

    response = browser.post(world.url_for(route), FORGED_POST)

    assert response.status_code == 403
    assert "CSRF verification failed" in response.content.decode()
    assert snapshot() == before
    still = browser.get(reverse("home"))
    if actor:
        assert still.status_code == 200, "the forged request signed the user out"
    else:
        assert redirects_to(still, reverse("account_login")), "the forged request signed in"


# --------------------------------------------------------------------------- #
# Websockets
# --------------------------------------------------------------------------- #


async def open_websocket(path: str, client: Client) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"origin", SITE_ORIGIN.encode()), (b"host", b"localhost")]
    if settings.SESSION_COOKIE_NAME in client.cookies:
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", WEBSOCKET_ROUTES, ids=str)
async def test_only_those_entitled_open_the_websocket(route: Route, world: World) -> None:
    access = access_of(route)
    assert access in (OWNER, SIGNED_IN, NOBODY), f"{route.pattern}: no rule for {access}"
    path = world.url_for(route) if access != NOBODY else "/ws/no-such-thing/"
    sockets = {
        actor: await open_websocket(path, await sync_to_async(signed_in)(user))
        for actor, user in {"alice": world.alice, "bob": world.bob, "anonymous": None}.items()
    }
    try:
        alice, alice_connected = sockets["alice"]
        bob, bob_connected = sockets["bob"]
        if access == NOBODY:
            assert not (alice_connected or bob_connected or sockets["anonymous"][1])
            return
        assert alice_connected
        assert not sockets["anonymous"][1]
        if access == OWNER:
            assert not bob_connected
            # The page catches up: Alice's conversation as it stands.
            assert SECRET_REPLY in await alice.receive_from(timeout=5)
        else:
            assert bob_connected
            await announce.sidebar_changed(world.alice.pk)
            assert SECRET_TITLE in await alice.receive_from(timeout=5)
            assert await bob.receive_nothing(timeout=0.3)
    finally:
        for communicator, connected in sockets.values():
            if connected:
                await communicator.disconnect()
