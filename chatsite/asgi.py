"""ASGI entry point: Django for HTTP, Channels for websockets (served by daphne)."""

import os
import sys

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

from chatsite import startup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Build Django first: it sets up apps before anything below imports models. A configuration
# mistake stops the server at start with one line saying what to fix.
try:
    startup.check_static_files()
    django_asgi_app = get_asgi_application()
    startup.check_configuration()
except ImproperlyConfigured as error:
    sys.exit(str(error))

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter

from conversations.sockets.routing import websocket_urlpatterns
from conversations.sockets.security import CsrfOriginValidator

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Origins as Django's CSRF check accepts them (scheme, host and port), not host names only.
        "websocket": CsrfOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
