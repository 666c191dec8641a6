"""What the tests of several daphne processes share: the skip without PostgreSQL and Redis, which
the processes share state through, and a long reply of numbered words to watch and stop midway."""

import pytest
from django.conf import settings

API_KEY = "sk-scaleout-tests"
# 120 numbered words, 40 ms apart: about five seconds, long enough to join and stop midway.
WORDS = [f"w{n} " for n in range(120)]
FULL_TEXT = "".join(WORDS)

shared_services = pytest.mark.skipif(
    not (settings.REDIS_URL and settings.DATABASES["default"]["ENGINE"].endswith("postgresql")),
    reason="several processes share state through PostgreSQL and Redis: set DATABASE_URL and "
    "REDIS_URL",
)
