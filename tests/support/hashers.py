"""A password hasher for the tests: Django's PBKDF2, with few iterations.

The real one is slow on purpose (about half a second a password on these machines), and most
tests create two or three users. The hashes this one makes are ordinary `pbkdf2_sha256` hashes,
so the servers the tests start in subprocesses, with the production hashers, still verify them.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000
