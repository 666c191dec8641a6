"""Reading the usage ledger as the tests check it."""

from datetime import date

from conversations import usage


def tokens_used_on(user_id: int, day: date) -> int:
    """Total tokens of the user's settled replies on `day`: one query."""
    return usage.tokens_on(user_id, day)[0]
