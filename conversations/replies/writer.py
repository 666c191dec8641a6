"""The process's writer: the one place a reply's text reaches the database while it streams.

Every CHAT_FLUSH_SECONDS it stores the text of every reply of this process that grew, in one
statement for all of them, which also serves as their heartbeat. Each write names the reply's
lease: a reply marked interrupted meanwhile (replies/sweeper.py) is not written, and its
generator is told to stop. A write that fails loses nothing: the text stays in memory and is
written at the next tick. The final store of a reply is retried until it succeeds.
"""

import asyncio
import contextlib
import logging
import time
import uuid

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from conversations.db import unit_of_work
from conversations.models import Message
from conversations.replies import quota, running
from conversations.replies.running import Generation

logger = logging.getLogger(__name__)


@unit_of_work
def _flush(texts: list[tuple[uuid.UUID, uuid.UUID, str]]) -> set[uuid.UUID]:
    """Store the text so far of streaming replies, given as (id, lease, text), and beat their
    hearts: one statement, executed for every reply, in one transaction.

    One call per tick for all the replies a process streams, not one per reply: with a thousand
    streaming, a call each was a thousand thread hops, pool checkouts and commits a second.
    Returns the ids of the replies whose lease is lost: nothing was written to them.
    """
    pk = Message._meta.pk
    # Names from the model, quoted by the backend; the values are parameters.
    sql = "UPDATE {} SET {} = %s, {} = %s WHERE {} = %s AND {} = %s AND {} = %s".format(  # noqa: S608
        *map(
            connection.ops.quote_name,
            [Message._meta.db_table, "content", "updated_at", pk.column, "lease", "status"],
        )
    )
    lease = Message._meta.get_field("lease")
    now = Message._meta.get_field("updated_at").get_db_prep_value(timezone.now(), connection)
    rows = [
        (
            text,
            now,
            pk.get_db_prep_value(message_id, connection),
            lease.get_db_prep_value(held, connection),
            Message.Status.STREAMING,
        )
        for message_id, held, text in sorted(texts)  # one lock order for every writer
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        if cursor.rowcount == len(rows):
            return set()
        # Rare: some reply was marked interrupted, or deleted with its conversation. Which?
        leases = {message_id: held for message_id, held, _ in texts}
        still_held = {
            message_id
            for message_id, held in Message.objects.filter(
                pk__in=leases, status=Message.Status.STREAMING
            ).values_list("pk", "lease")
            if held == leases[message_id]
        }
        return set(leases) - still_held


@unit_of_work
def _finish(
    message_id: uuid.UUID, lease: uuid.UUID, text: str, status: str, metadata: dict
) -> bool:
    """Store the reply in its final state, if its generator still holds the lease; False if not
    (the reply was marked interrupted meanwhile, or deleted): then nothing is written. Its usage
    is settled either way: the provider billed what it sent."""
    stored = bool(
        Message.objects.filter(pk=message_id, lease=lease, status=Message.Status.STREAMING).update(
            content=text, status=status, metadata=metadata, updated_at=timezone.now(), lease=None
        )
    )
    quota.settle(message_id, text, status, metadata)
    return stored


def ensure_writer() -> None:
    running.ensure_forever(_write_forever)


async def _write_forever() -> None:
    """Every CHAT_FLUSH_SECONDS, store the text of every reply of this process that grew.

    A reply that did not grow is still written once per heartbeat period, so a healthy but
    silent stream (a model slow to start) is not taken for a dead one. A failed write loses
    nothing: the text stays with its generation and is written at the next tick, and one
    database hiccup does not stop the heartbeats. A reply whose lease is lost is told to stop.
    Asked to (`running.confirm_leases_now`), it writes at once: a write confirms a lease.
    """
    write_now = running.new_write_signal()
    heartbeat = max(settings.CHAT_FLUSH_SECONDS, settings.CHAT_STALE_SECONDS / 3)
    failed = False
    while True:
        if failed:
            # Not sooner when asked: a database that refuses writes is not hammered.
            await asyncio.sleep(settings.CHAT_FLUSH_SECONDS)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.CHAT_FLUSH_SECONDS):
                    await write_now.wait()
        write_now.clear()
        now = time.monotonic()
        due = [
            (generation, generation.text)
            for generation, _ in list(running.generations.values())
            if not generation.lease_lost
            and (generation.flushed < generation.length or now - generation.last_write >= heartbeat)
        ]
        if not due:
            continue
        failed = True
        try:
            lost = await _flush([(g.message_id, g.lease, text) for g, text in due])
        except Exception:
            logger.exception("Saving %d streaming replies failed; trying again", len(due))
            continue
        failed = False
        for generation, text in due:
            if generation.message_id in lost:
                # (Or stored in its final state meanwhile: then it has nothing left to write.)
                generation.lose_lease()
                continue
            generation.flushed = max(generation.flushed, len(text))
            generation.lease_confirmed(now)


# How long the final store of a reply is retried while the database cannot take it.
FINAL_STORE_SECONDS = 120


FINAL_STORE_MAX_PAUSE = 5.0


async def store_until_done(generation: Generation, status: str, metadata: dict) -> bool:
    """Store the reply in its final state, trying again, less and less often, while the
    database cannot take it (no connection to spare, a restart): the text exists nowhere else.
    False when the lease is lost: the reply was marked interrupted and its stored text stands.
    """
    give_up_at = time.monotonic() + FINAL_STORE_SECONDS
    pause = 0.1
    while True:
        try:
            attempt = time.monotonic()
            stored = await _finish(
                generation.message_id, generation.lease, generation.text, status, metadata
            )
            if stored:
                generation.lease_confirmed(attempt)
            return stored
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > give_up_at:
                raise
            logger.warning(
                "Storing reply %s failed; trying again in %.1f s",
                generation.message_id,
                pause,
                exc_info=True,
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, FINAL_STORE_MAX_PAUSE)
