"""Visitors of the sign-in pages for the tests.

allauth's limits (wrong passwords, signups, mails per address) live in the cache, which
outlives a test, and in Redis a test run: each test comes from an address and uses email
addresses no earlier test used.
"""

import random
import uuid

from django.test import Client
from django.urls import reverse

# The password of the fixtures' users (alice, bob).
PASSWORD = "correct horse battery staple"


def some_address() -> str:
    return f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"


def some_email(name: str = "someone") -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}@example.com"


def visitor(**extra) -> Client:
    """A browser at an address of its own."""
    return Client(REMOTE_ADDR=some_address(), **extra)


def sign_in(client: Client, email: str, password: str) -> tuple[bool, str]:
    """Whether the client is signed in after the sign-in form, and the form's answer."""
    response = client.post(reverse("account_login"), {"login": email, "password": password})
    signed_in = client.get(reverse("home")).status_code == 200
    return signed_in, response.content.decode()
