"""Signing a request in with a personal API token, for the JSON API.

`django.contrib.auth.authenticate(request, api_token=key)` answers the active owner of an
active token, or None. The API asks it for each request that carries `Authorization: Bearer`;
a token never opens a session, so this backend gives no session its user back.
"""

from django.contrib.auth.backends import BaseBackend
from django.http import HttpRequest

from .models import ApiToken, User


class ApiTokenBackend(BaseBackend):
    def authenticate(
        self, request: HttpRequest | None, api_token: str | None = None
    ) -> User | None:
        if api_token is None:
            return None
        return ApiToken.user_for_key(api_token)
