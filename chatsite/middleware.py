"""Response headers that Django's settings cannot set by themselves."""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

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


@sync_and_async_middleware
def content_security_policy(
    get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]],
):
    """Send the Content-Security-Policy with every response that has none of its own."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            response = await get_response(request)
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    return middleware
