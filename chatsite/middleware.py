"""Middleware of our own: response headers Django's settings cannot set, static files, and
requests refused before any view reads them."""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware

from conversations.errors import ErrorCode, api_error, is_api

# Scripts, styles, images, fonts and connections (the websocket included: in CSP 3 'self'
# matches ws: and wss: on the page's own host) come from this site only, and never inline.
# Style *attributes* are the one exception: the Markdown sanitizer keeps `text-align` on table
# cells (nothing else survives it), and a style attribute cannot run script. <style> elements
# and stylesheets from elsewhere stay refused. The Django admin needs nothing more.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)


def _response_middleware(adjust: Callable[[HttpRequest, HttpResponse], HttpResponse]):
    """A middleware, sync or async as the chain is, that passes each response through
    `adjust(request, response)`."""

    @sync_and_async_middleware
    def middleware_factory(
        get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]],
    ):
        if iscoroutinefunction(get_response):

            async def async_middleware(request: HttpRequest) -> HttpResponse:
                return adjust(request, await get_response(request))

            return async_middleware

        def middleware(request: HttpRequest) -> HttpResponse:
            return adjust(request, get_response(request))

        return middleware

    middleware_factory.__doc__ = adjust.__doc__
    return middleware_factory


def _with_policy(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Send the Content-Security-Policy with every response that has none of its own."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


content_security_policy = _response_middleware(_with_policy)


def _carries_credentials(request: HttpRequest, response: HttpResponse) -> bool:
    session = settings.SESSION_COOKIE_NAME
    return (
        session in request.COOKIES
        or "Authorization" in request.headers
        or session in response.cookies  # signing in
    )


def _keep_private(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """`Cache-Control: private, no-store` on every response to a request that carries a session
    or an API token: chat pages, API answers, exports and settings are one person's, and no
    cache, a proxy's or the browser's own disk, may keep them after that person signs out.

    It goes by the credentials sent, not by the user they prove: reading the session here would
    cost every request a query. Static files are answered before this (WhiteNoise, cached for a
    year), and the public share page sends its own no-store (conversations/views/sharing.py).
    """
    if _carries_credentials(request, response):
        patch_cache_control(response, private=True, no_store=True)
    return response


private_responses_not_stored = _response_middleware(_keep_private)


NULL_IN_QUERY = "A null character (%00) in a web address is not accepted."


def _has_null_in_query(request: HttpRequest) -> bool:
    query = request.META.get("QUERY_STRING", "")
    return "%00" in query or "\x00" in query


def _null_refusal(request: HttpRequest) -> HttpResponse:
    if is_api(request):
        return api_error(400, ErrorCode.INVALID, NULL_IN_QUERY)
    return render(request, "400.html", {"message": NULL_IN_QUERY}, status=400)


@sync_and_async_middleware
def refuse_null_in_queries(
    get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]],
):
    """A request whose query string holds a NUL character is answered 400, JSON for the API.

    No parameter means anything with one, and PostgreSQL refuses NUL in any text it is sent:
    a search, a list filter in the admin or any later parameter would fail with a server error.
    Forms need nothing of this: Django's form fields refuse NUL themselves.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            if _has_null_in_query(request):
                return await sync_to_async(_null_refusal)(request)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        if _has_null_in_query(request):
            return _null_refusal(request)
        return get_response(request)

    return middleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, without making every other request cross threads twice.

    WhiteNoise's middleware is sync-only, so Django ran it on the sync thread and called the rest
    of the chain back from there: two thread hops in front of every async view, the chat's POST
    included (docs/performance.md). Here a request for anything but a static file goes straight
    on; a static file is still found and opened by WhiteNoise, the file on a worker thread.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response, settings=settings) -> None:
        super().__init__(get_response, settings=settings)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)
