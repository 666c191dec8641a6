"""How django-allauth signs people in here (settings.ACCOUNT_ADAPTER)."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.internal.ratelimit import get_ip
from django.http import HttpRequest


class AccountAdapter(DefaultAccountAdapter):
    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials) -> str:
        """The "key" of the `login_failed` rate limit: an account *and* the client trying it.

        allauth keys it on the account alone, so five wrong passwords from anywhere locked its
        owner out everywhere. Counted per client (the address allauth's per-IP limit counts,
        IPv6 by network), a guesser locks out only themself, and the per-IP limit still caps
        how many accounts one client may try.
        """
        return f"{get_ip(request)}:{super()._get_login_attempts_cache_key(request, **credentials)}"
