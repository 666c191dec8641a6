"""The colour theme: chosen per browser, kept in a cookie, written into <html> by the server."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from conversations.views.theme import THEME_COOKIE

HTMX = {"HX-Request": "true"}


def html_theme(client: Client, url: str) -> str:
    page = client.get(url).content.decode()
    return re.search(r'<html lang="en" data-theme="(\w+)">', page)[1]


def pressed(client: Client, url: str) -> list[str]:
    """The toggle's button marked as chosen."""
    page = client.get(url).content.decode()
    return re.findall(r'value="(\w+)" class="theme-choice" aria-pressed="true"', page)


@pytest.mark.django_db
class TestTheme:
    def test_a_new_browser_follows_the_system(self, alice_client: Client):
        assert html_theme(alice_client, reverse("home")) == "system"
        assert pressed(alice_client, reverse("home")) == ["system"]

    @pytest.mark.parametrize("choice", ["dark", "light", "system"])
    def test_the_choice_is_remembered_and_rendered_by_the_server_on_every_page(
        self, alice_client: Client, conversation, choice: str
    ):
        response = alice_client.post(
            reverse("theme_set"), {"theme": choice, "next": conversation.get_absolute_url()}
        )

        assert response.status_code == 302
        assert response["Location"] == conversation.get_absolute_url()
        cookie = response.cookies[THEME_COOKIE]
        assert cookie.value == choice
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["max-age"]
        for url in (conversation.get_absolute_url(), reverse("usage"), reverse("home")):
            assert html_theme(alice_client, url) == choice
            assert pressed(alice_client, url) == [choice]

    def test_signed_out_pages_wear_the_theme_too(self, client: Client):
        client.post(reverse("theme_set"), {"theme": "dark"})

        assert html_theme(client, reverse("account_login")) == "dark"

    def test_htmx_switches_without_leaving_the_page(self, alice_client: Client):
        response = alice_client.post(reverse("theme_set"), {"theme": "dark"}, headers=HTMX)

        assert response.status_code == 204
        assert response.cookies[THEME_COOKIE].value == "dark"
        assert html_theme(alice_client, reverse("home")) == "dark"

    def test_an_unknown_theme_or_cookie_changes_nothing(self, alice_client: Client):
        alice_client.post(reverse("theme_set"), {"theme": "dark"})

        response = alice_client.post(reverse("theme_set"), {"theme": '"><script>x</script>'})
        assert THEME_COOKIE not in response.cookies
        assert html_theme(alice_client, reverse("home")) == "dark"

        alice_client.cookies[THEME_COOKIE] = '"><script>x</script>'
        assert html_theme(alice_client, reverse("home")) == "system"

    def test_it_never_sends_the_browser_to_another_site(self, alice_client: Client):
        response = alice_client.post(
            reverse("theme_set"),
            {"theme": "light", "next": "https://evil.example/phish"},
            headers={"Referer": "https://evil.example/"},
        )

        assert response.status_code == 302
        assert response["Location"] == reverse("home")

    def test_without_next_it_goes_back_to_the_page_it_came_from(self, alice_client: Client):
        response = alice_client.post(
            reverse("theme_set"),
            {"theme": "light"},
            headers={"Referer": "http://testserver/usage/"},
        )

        assert response["Location"] == "http://testserver/usage/"
