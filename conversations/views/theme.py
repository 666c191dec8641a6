"""Light, dark or the system's colours: a choice of this browser, kept in a cookie.

The server writes the choice into `<html data-theme="...">`, so a page never flashes in the
wrong colours and no inline script is needed. Choosing is a form POST that goes back where it
came from; with JavaScript (static/js/theme.js) the page switches at once and htmx posts it.
"""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

THEME_COOKIE = "theme"
THEMES = {"system": "System", "light": "Light", "dark": "Dark"}
ONE_YEAR = 365 * 24 * 3600


def theme_of(request: HttpRequest) -> str:
    choice = request.COOKIES.get(THEME_COOKIE, "")
    return choice if choice in THEMES else "system"


def theme(request: HttpRequest) -> dict:
    """Context processor: the browser's theme, and the choices for the toggle."""
    return {"theme": theme_of(request), "themes": THEMES}


def _back(request: HttpRequest) -> str:
    for candidate in (request.POST.get("next"), request.headers.get("Referer")):
        if candidate and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return candidate
    return reverse("home")


@require_POST
def set_theme(request: HttpRequest) -> HttpResponse:
    choice = request.POST.get("theme", "")
    response = HttpResponse(status=204) if request.htmx else HttpResponseRedirect(_back(request))
    if choice in THEMES:
        response.set_cookie(
            THEME_COOKIE,
            choice,
            max_age=ONE_YEAR,
            samesite="Lax",
            httponly=True,
            secure=settings.SESSION_COOKIE_SECURE,
        )
    return response
