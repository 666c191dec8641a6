"""Adding an email address to an account: by a link mailed to it.

allauth stores an added address at once, unverified, and signs in with it: anyone could add
someone else's address, sign in with it and keep its owner from signing up with it. Here an
added address is stored nowhere until the link mailed to it is followed by the account that
asked for it; then it is stored verified. Until then it signs no one in and stays free.
"""

from allauth.account import app_settings
from allauth.account.adapter import get_adapter
from allauth.account.models import EmailAddress
from allauth.core import ratelimit
from django.contrib import messages
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse

from .models import User

SALT = "accounts.email_addresses"


def _sent_lately(request: HttpRequest, user: User, email: str, *, dry_run: bool = False) -> bool:
    """Whether `user` was mailed a link for `email` lately (ACCOUNT_RATE_LIMITS "add_email").

    Counted per account *and* address: another account adding the same address silences
    nothing of this one's.
    """
    key = f"{user.pk}:{email.lower()}"
    return not ratelimit.consume(request, action="add_email", key=key, dry_run=dry_run)


def too_many_links(request: HttpRequest, user: User, email: str) -> bool:
    """Whether adding `email` would mail a link beyond the account's limit
    (ACCOUNT_RATE_LIMITS "add_email_per_account")."""
    return not _sent_lately(request, user, email, dry_run=True) and not ratelimit.consume(
        request, action="add_email_per_account", user=user, dry_run=True
    )


def send_link(request: HttpRequest, user: User, email: str) -> None:
    """Mail `email` the link that adds it to `user`'s account, unless it was lately: a link
    already sent stays good for ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS."""
    adapter = get_adapter(request)
    if not _sent_lately(request, user, email):
        ratelimit.consume(request, action="add_email_per_account", user=user)
        token = signing.dumps({"user": user.pk, "email": email}, salt=SALT)
        link = request.build_absolute_uri(reverse("email_add_confirm", args=[token]))
        adapter.send_mail("account/email/add_email", email, {"user": user, "link": link})
    adapter.add_message(
        request, messages.INFO, "account/messages/email_confirmation_sent.txt", {"email": email}
    )


def email_in_link(user: User, token: str) -> str | None:
    """The address a link adds to `user`'s account; None when it is forged, expired, or was
    sent for another account."""
    max_age = app_settings.EMAIL_CONFIRMATION_EXPIRE_DAYS * 24 * 3600
    try:
        payload = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.BadSignature:
        return None
    return payload["email"] if payload["user"] == user.pk else None


def add_verified(request: HttpRequest, user: User, email: str) -> None:
    """Store the address as the user's, verified, unless another account verified it first;
    allauth's messages tell the user which."""
    address = EmailAddress.objects.filter(user=user, email=email).first()
    get_adapter(request).confirm_email(request, address or EmailAddress(user=user, email=email))
