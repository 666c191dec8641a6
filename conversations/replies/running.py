"""This process's replies: the generations it runs, how many it may take, and how it stops.

A reply being generated is a `Generation`: its text so far, its lease, its watchers here and in
other processes. `generations` holds those of this process, by reply id; the writer
(replies/writer.py), the sweeper (replies/sweeper.py) and the run (replies/generate.py) read it.

A process takes at most CHAT_MAX_REPLIES replies at once: `admission()` refuses one more with
ProcessBusy before anything is stored. When the process shuts down (`shut_down()`), it takes no
more, lets those running finish for a grace period and stores the rest as interrupted.
"""

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from conversations.models import Message
from conversations.replies import events

logger = logging.getLogger(__name__)

# For what part of CHAT_STALE_SECONDS after a write a generator is sure it holds its lease. The
# rest is the margin for the clocks of other processes and for the write's own delay: the write
# stores the time it is made, later than the moment taken for it here.
LEASE_SURE_FRACTION = 0.5


class ProcessBusy(Exception):
    """This process streams as many replies as it may (CHAT_MAX_REPLIES): try again shortly."""

    retry_after = 5
    message = (
        "The server is busy with other replies right now. Your message was not sent; "
        "try again in a few seconds."
    )


class ShuttingDown(ProcessBusy):
    """This process is shutting down: another one, or this one restarted, takes the message."""

    message = "The server is restarting. Your message was not sent; try again in a few seconds."


@dataclass
class Generation:
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    model: str
    # What the model is sent: read in the transaction that stored the reply.
    history: list[dict[str, str]]
    # The reply's fencing token: every write of this generation is made only while the row
    # still holds it.
    lease: uuid.UUID
    provider: str = ""
    temperature: float | None = None
    parts: list[str] = field(default_factory=list)
    length: int = 0
    published: int = 0
    # The most of its text any watcher was handed: `published`, or more when a watcher that
    # follows is handed the text so far at once.
    handed_out: int = 0
    flushed: int = 0
    # When the reply was last written to the database (time.monotonic(), taken before the
    # write): its heartbeat, and the last moment it surely held its lease.
    last_write: float = field(default_factory=time.monotonic)
    # Why the reader was cancelled, if it was on purpose: the status the reply ends with.
    cut_short: str = ""
    # The reply was marked interrupted meanwhile: what is stored stands, nothing more is written.
    lease_lost: bool = False
    first_token_at: float | None = None
    reader: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Watchers handed each batch: inboxes in this process, channels of other processes.
    inboxes: set[asyncio.Queue] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    # Stored in its final state and announced: no new watcher is taken on.
    finished: bool = False

    @property
    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def append(self, delta: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.parts.append(delta)
        self.length += len(delta)
        self.changed.set()

    def relayable(self) -> int:
        """How much of the text its watchers may be given now: all of it while the lease surely
        holds. Once it may have been taken (no write confirmed it for longer than another
        process's sweeper allows, less a margin: this process was paused, say), only what they
        were given before, until the writer, asked at once, confirms it.

        Monotonic time counts on while a process is paused (SIGSTOP, a frozen VM), so a pause
        shows here as soon as the process runs again.
        """
        if self.lease_lost:
            return self.published
        if time.monotonic() - self.last_write < settings.CHAT_STALE_SECONDS * LEASE_SURE_FRACTION:
            return self.length
        confirm_leases_now()
        return self.published

    def lease_confirmed(self, at: float) -> None:
        """A write made after `at` found the lease held: text held back may be handed on."""
        self.last_write = max(self.last_write, at)
        if self.published < self.length:
            self.changed.set()

    def request_stop(self) -> None:
        self._cut_short(Message.Status.STOPPED)

    def interrupt(self) -> None:
        """End the reply now, stored as interrupted with the text so far (the process stops)."""
        self._cut_short(Message.Status.INTERRUPTED)

    def lose_lease(self) -> None:
        """The reply was taken for dead and marked interrupted: stop, and write nothing more."""
        self.lease_lost = True
        self._cut_short(Message.Status.INTERRUPTED)

    def _cut_short(self, status: str) -> None:
        self.cut_short = self.cut_short or status
        # Cancelling the reader closes the request to the model.
        if self.reader and not self.reader.done():
            self.reader.cancel()


# Generations running in this process, by reply id. Holding the tasks here also keeps them
# from being garbage-collected while they run.
generations: dict[uuid.UUID, tuple[Generation, asyncio.Task]] = {}


# Replies admitted by begin() or regenerate() and not yet running: counted against the cap.
_admitting = 0


# Set by shut_down(): no reply is taken any more.
_shutting_down = False


def replies_in_progress() -> int:
    """Replies this process has taken on: running, or being stored to run."""
    return len(generations) + _admitting


def ensure_capacity() -> None:
    """Raise ProcessBusy when this process streams as many replies as it may.

    Asks nothing of the database: a request that would start a reply is refused by it before
    its session is even read, so that refusals cost the process, and its pool, next to nothing.
    Raises ShuttingDown, a kind of ProcessBusy, once the process is shutting down.
    """
    if _shutting_down:
        raise ShuttingDown
    if replies_in_progress() >= settings.CHAT_MAX_REPLIES:
        raise ProcessBusy


@contextlib.contextmanager
def admission():
    """Hold a place among this process's CHAT_MAX_REPLIES while a reply is stored and started.

    Counted before the first await, so concurrent requests cannot all pass the check.
    """
    global _admitting
    ensure_capacity()
    _admitting += 1
    try:
        yield
    finally:
        _admitting -= 1


# The process's loops that run for as long as its event loop: the sweeper and the writer.
_forever: dict[str, asyncio.Task] = {}


def ensure_forever(loop_function) -> None:
    """Start `loop_function()` on this event loop, unless it already runs there."""
    loop = asyncio.get_running_loop()
    task = _forever.get(loop_function.__name__)
    if task is None or task.done() or task.get_loop() is not loop:
        _forever[loop_function.__name__] = loop.create_task(
            loop_function(), context=contextvars.Context()
        )


def forget(task: asyncio.Task) -> None:
    for message_id, (_, running) in list(generations.items()):
        if running is task:
            del generations[message_id]
    if not task.cancelled() and task.exception():
        logger.error("Generation task failed", exc_info=task.exception())


# After the grace period, how long the replies cut short may take to be stored and announced.
SHUTDOWN_STORE_SECONDS = 5.0


async def shut_down(grace: float) -> None:
    """Stop this process's replies for good, as the process is about to exit.

    No reply is taken any more (ShuttingDown); those running are given `grace` seconds to finish,
    then the rest are cut short and stored as interrupted with all the text they have, and their
    watchers are told, as for any reply that ends.
    """
    global _shutting_down
    _shutting_down = True
    if replies_in_progress():
        logger.info(
            "Shutting down: waiting up to %s s for %d replies", grace, replies_in_progress()
        )
    await _wait_for_replies(time.monotonic() + grace, cut_short=False)
    if replies_in_progress():
        logger.info("Shutting down: storing %d replies as interrupted", replies_in_progress())
        await _wait_for_replies(time.monotonic() + SHUTDOWN_STORE_SECONDS, cut_short=True)
    if replies_in_progress():
        logger.error("Shutting down: %d replies could not be stored", replies_in_progress())


async def _wait_for_replies(deadline: float, *, cut_short: bool) -> None:
    """Wait until this process has no reply left, or until `deadline`; with `cut_short`,
    interrupt every reply running (including those that were being admitted meanwhile)."""
    while replies_in_progress() and time.monotonic() < deadline:
        if cut_short:
            for generation, _ in list(generations.values()):
                generation.interrupt()
        await asyncio.sleep(0.05)


def follow_here(message_id: uuid.UUID, inbox: asyncio.Queue, offset: int) -> bool:
    """Follow a reply that this process generates: `inbox` gets its text from `offset` at
    once, then each batch, then REPLY_DONE once the reply is stored in its final state.

    False when this process does not generate it (any more): the database then has its state,
    or another process has the generator (`request_follow`).
    """
    entry = generations.get(message_id)
    if entry is None or entry[0].finished:
        return False
    generation = entry[0]
    generation.inboxes.add(inbox)
    end = generation.relayable()
    if end > offset:
        inbox.put_nowait(events.delta(message_id, offset, generation.text[offset:end]))
        generation.handed_out = max(generation.handed_out, end)
    return True


def is_running_here(message_id: uuid.UUID) -> bool:
    """Whether this process generates the reply and has not finished it: the reply cannot end
    without its watchers here being told, so they need not ask the database."""
    entry = generations.get(message_id)
    return entry is not None and not entry[0].finished


def unfollow_here(message_id: uuid.UUID, inbox: asyncio.Queue) -> None:
    entry = generations.get(message_id)
    if entry:
        entry[0].inboxes.discard(inbox)


# Set to have the writer write at once rather than at its next tick: a generator doubts its lease.
_write_now: asyncio.Event | None = None


def confirm_leases_now() -> None:
    if _write_now is not None:
        _write_now.set()


_background_tasks: set[asyncio.Task] = set()


def background(coroutine) -> None:
    """Run `coroutine` after the work at hand, without delaying it; a failure is logged."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _background_tasks.add(task)
    task.add_done_callback(_background_done)


def _background_done(task: asyncio.Task) -> None:
    _background_tasks.discard(task)
    if not task.cancelled() and task.exception():
        logger.error("A background task failed", exc_info=task.exception())


def new_write_signal() -> asyncio.Event:
    """The event that has the writer (replies/writer.py) write at once, made anew for the writer
    of the running event loop."""
    global _write_now
    _write_now = asyncio.Event()
    return _write_now
