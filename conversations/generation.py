"""Generating a reply: a unit of work of its own, independent of any websocket.

`begin()` stores the user's message and an empty assistant reply, then starts a task on the
running event loop that streams the reply from the provider. Closing the tab does not stop it.

While it runs, the task
- hands its text in batches to the watchers that follow it (conversations/events.py): directly
  to those in this process, through the channel layer to those in others,
- flushes the text so far to the database at a bounded cadence (never a write per token), which
  also serves as a heartbeat: a reply whose heartbeat stops is marked interrupted,
- listens on its own channel for a stop (from any process) and for watchers of other processes
  that follow or unfollow it,
and finally stores the reply once, with model and usage, and announces that it is done.

Each write names the reply's lease, a token stored with the reply when it starts. Marking a
reply interrupted clears it: a generator whose process was paused long enough to be taken for
dead finds its lease gone at its next write, stops at once and never writes again, so it cannot
overwrite what the conversation became meanwhile. Nor does it hand its watchers text it
received after the pause: once no write has confirmed its lease for longer than the sweeper
allows, less a margin, it holds its text back and has the writer confirm the lease at once,
and hands the text on only if it still holds it. A write that fails (the database has no
connection to spare) loses nothing: the text stays in memory and is written at the next tick,
and the final store is retried until it succeeds.

A process takes at most CHAT_MAX_REPLIES replies at once; `begin()` refuses one more with
ProcessBusy before anything is stored. When the process shuts down (`shut_down()`), it takes no
more, lets those running finish for a grace period and stores the rest as interrupted.
"""

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import caches
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from . import context, events, fragments, provider, providers, quota
from .db import release_connection, unit_of_work
from .models import Conversation, Message, stale_streaming_cutoff

logger = logging.getLogger(__name__)

TITLE_LENGTH = 60

# For what part of CHAT_STALE_SECONDS after a write a generator is sure it holds its lease. The
# rest is the margin for the clocks of other processes and for the write's own delay: the write
# stores the time it is made, later than the moment taken for it here.
LEASE_SURE_FRACTION = 0.5


class ReplyInProgress(Exception):
    """The conversation already has a reply streaming: one at a time."""


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
        _confirm_leases_now()
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
_running: dict[uuid.UUID, tuple[Generation, asyncio.Task]] = {}
# Replies admitted by begin() or regenerate() and not yet running: counted against the cap.
_admitting = 0
# Set by shut_down(): no reply is taken any more.
_shutting_down = False


def replies_in_progress() -> int:
    """Replies this process has taken on: running, or being stored to run."""
    return len(_running) + _admitting


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
def _admission():
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


def title_from(text: str) -> str:
    first_line = " ".join(text.split())
    if len(first_line) <= TITLE_LENGTH:
        return first_line
    return first_line[: TITLE_LENGTH - 1].rstrip() + "…"


class NothingToRegenerate(Exception):
    """The conversation has no reply to regenerate, or the message is not the last one."""


def reply_streaming(conversation: Conversation) -> bool:
    """Whether a reply of the conversation is being written. One whose process died does not
    count: it is marked interrupted, then the question is asked again. Only then: most
    conversations have none, and one query says so."""
    streaming = conversation.messages.filter(status=Message.Status.STREAMING)
    return streaming.exists() and (
        not mark_stale_replies_interrupted(conversation_id=conversation.pk) or streaming.exists()
    )


def _lock_idle(conversation: Conversation) -> Conversation:
    """Lock the conversation row; refuse if a reply is streaming (one reply at a time)."""
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if reply_streaming(locked):
        raise ReplyInProgress
    return locked


def _new_reply(conversation: Conversation, created_at) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        created_at=created_at,
        metadata=_answered_by(conversation.metadata),
        lease=uuid.uuid4(),
    )


def _answered_by(settings_of_conversation: dict) -> dict:
    """What a new reply records of the model asked: provider, model and temperature."""
    choice = providers.for_conversation(settings_of_conversation)
    recorded = {
        "model": choice.model,
        "provider": choice.provider.slug,
        "provider_label": choice.provider.label,
    }
    if settings_of_conversation.get("temperature") is not None:
        recorded["temperature"] = settings_of_conversation["temperature"]
    return recorded


def _supersede(old: Message, new: Message) -> None:
    """Keep `old` as an earlier version of `new`, with the versions it already had."""
    Message.objects.filter(superseded_by=old).update(superseded_by=new)
    old.superseded_by = new
    old.save(update_fields=["superseded_by"])


def _touch(conversation: Conversation, locked: Conversation, now, text: str | None) -> None:
    fields = ["updated_at"]
    locked.updated_at = now
    if text and not locked.title:
        locked.title = title_from(text)
        fields.append("title")
    locked.save(update_fields=fields)
    conversation.title, conversation.updated_at = locked.title, locked.updated_at


@database_sync_to_async
def _store_turn(
    conversation: Conversation, text: str, *, replacing: uuid.UUID | None
) -> tuple[Message, list[dict[str, str]]]:
    with transaction.atomic():
        locked = _lock_idle(conversation)
        current = locked.messages.filter(superseded_by__isnull=True).order_by("created_at")
        previous: list[Message] = []
        if replacing:
            last_user = current.filter(role=Message.Role.USER).last()
            if not last_user or last_user.pk != replacing:
                raise NothingToRegenerate
            previous = list(current.filter(created_at__gte=last_user.created_at))
        now = timezone.now()
        question = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=text, created_at=now
        )
        # One microsecond later, so the reply always sorts after the message it answers.
        reply = _new_reply(locked, now + timezone.timedelta(microseconds=1))
        # Editing the last message: it and its replies become earlier versions.
        for old in previous:
            _supersede(old, question if old.role == Message.Role.USER else reply)
        _touch(conversation, locked, now, text)
        # Read here, where the rows are at hand, rather than by the generation a moment later:
        # the model is asked one database round trip sooner.
        history = _model_messages(locked, reply.pk)
        quota.reserve(reply, history, locked.owner_id)
    return reply, history


@database_sync_to_async
def _store_regeneration(conversation: Conversation) -> tuple[Message, list[dict[str, str]]]:
    with transaction.atomic():
        locked = _lock_idle(conversation)
        last = locked.messages.filter(superseded_by__isnull=True).order_by("created_at").last()
        if not last or last.role != Message.Role.ASSISTANT:
            raise NothingToRegenerate
        now = timezone.now()
        reply = _new_reply(locked, now)
        _supersede(last, reply)
        _touch(conversation, locked, now, None)
        history = _model_messages(locked, reply.pk)
        quota.reserve(reply, history, locked.owner_id)
    return reply, history


def mark_stale_replies_interrupted(
    conversation_id: uuid.UUID | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Mark replies whose generator stopped beating (its process died) as interrupted, and
    take their lease: a generator that was only paused finds it gone and writes no more.

    Returns the (conversation id, reply id) of each reply marked.
    """
    stale = Message.objects.filter(
        status=Message.Status.STREAMING, updated_at__lt=stale_streaming_cutoff()
    )
    if conversation_id:
        stale = stale.filter(conversation_id=conversation_id)
    marked = []
    for conversation_pk, reply_pk in stale.values_list("conversation_id", "pk"):
        if reply_pk in _running:
            # Generated here, so alive, whatever its heartbeat says: its writes failed for want
            # of a database connection, and it holds text that only it can store.
            continue
        # Re-checked row by row: a reply whose generator beat meanwhile is left alone.
        if (
            Message.objects.filter(pk=reply_pk, status=Message.Status.STREAMING)
            .filter(updated_at__lt=stale_streaming_cutoff())
            .update(status=Message.Status.INTERRUPTED, updated_at=timezone.now(), lease=None)
        ):
            marked.append((conversation_pk, reply_pk))
    quota.settle_ended(None if conversation_id is None else [reply for _, reply in marked])
    return marked


async def _sweep_forever() -> None:
    """Every process that serves chats also looks for replies orphaned by a dead process."""
    interval = max(1.0, settings.CHAT_STALE_SECONDS / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            marked = await unit_of_work(mark_stale_replies_interrupted)()
            for conversation_id, reply_id in marked:
                await get_channel_layer().group_send(
                    events.conversation_group(conversation_id), events.reply_done(reply_id)
                )
        except Exception:
            logger.exception("Sweeping stale replies failed")


# The process's loops that run for as long as its event loop: the sweeper and the writer.
_forever: dict[str, asyncio.Task] = {}


def _ensure_forever(loop_function) -> None:
    """Start `loop_function()` on this event loop, unless it already runs there."""
    loop = asyncio.get_running_loop()
    task = _forever.get(loop_function.__name__)
    if task is None or task.done() or task.get_loop() is not loop:
        _forever[loop_function.__name__] = loop.create_task(
            loop_function(), context=contextvars.Context()
        )


def ensure_sweeper() -> None:
    _ensure_forever(_sweep_forever)


def _model_messages(conversation: Conversation, reply_id: uuid.UUID) -> list[dict[str, str]]:
    """What the model is sent to write reply `reply_id`: the system prompt and the current
    messages before it."""
    messages: list[dict[str, str]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for role, content in (
        conversation.messages.filter(superseded_by__isnull=True)
        .exclude(pk=reply_id)
        .exclude(content="")
        .order_by("created_at")
        .values_list("role", "content")
    ):
        messages.append({"role": role, "content": content})
    return messages


def _recorded_choice(generation: Generation) -> dict:
    chosen = providers.get(generation.provider)
    recorded = {"provider": generation.provider}
    if chosen is not None:
        recorded["provider_label"] = chosen.label
    if generation.temperature is not None:
        recorded["temperature"] = generation.temperature
    return recorded


def _fit_context(
    generation: Generation, messages: list[dict[str, str]]
) -> tuple[list[dict[str, str]], int]:
    """The messages that fit the model's context window, and how many earlier ones do not.
    Refuses a request whose newest message cannot fit, rather than send it to fail."""
    window = providers.context_window(generation.provider, generation.model)
    fitted = context.fit(messages, window=window, reserve=settings.CHAT_REPLY_RESERVE_TOKENS)
    if not fitted.fits:
        raise provider.ProviderError(
            f"This message is too long for {generation.model}: with the system prompt and "
            f"room for the reply it needs about {fitted.needed_tokens:,} tokens, and the "
            f"model's context window holds {fitted.window:,}. Shorten it, or choose a model "
            "with a larger context window in the conversation's settings.",
            kind="context",
        )
    return fitted.messages, fitted.left_out


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


def _detached(coroutine) -> asyncio.Future:
    """Run `coroutine` as a task of its own, shielded from the request that awaits it.

    Django cancels a view when its client disconnects. Storing a turn and starting its reply
    must not be cut in two by that: a stored reply with no generator would look alive for
    CHAT_STALE_SECONDS and block the conversation. The task keeps the request's context, so
    its database calls run where the request's do (a view waiting on calls queued anywhere
    else could wait on its own thread).
    """
    return asyncio.shield(asyncio.get_running_loop().create_task(coroutine))


async def begin(
    conversation: Conversation, text: str, *, replacing: uuid.UUID | None = None
) -> Message:
    """Store the user's message and an empty reply, then start generating it.

    With `replacing`, the message is an edit of the conversation's last user message, which is
    kept with its replies as earlier versions. Raises ProcessBusy when this process streams as
    many replies as it may (before anything is stored), ReplyInProgress when a reply is
    streaming, NothingToRegenerate when `replacing` is not the last user message, and
    quota.UserLimitReached when the user's tokens for today are spent or they have as many
    replies streaming as they may (the turn's transaction is then rolled back).
    """
    with _admission():
        event = events.CONVERSATION_REFRESH if replacing else events.CONVERSATION_TURN
        store = _store_turn(conversation, text, replacing=replacing)
        return await _detached(_store_and_start(conversation, store, event))


async def regenerate(conversation: Conversation) -> Message:
    """Generate the last reply again; the previous one is kept as an earlier version."""
    with _admission():
        store = _store_regeneration(conversation)
        return await _detached(_store_and_start(conversation, store, events.CONVERSATION_REFRESH))


async def _store_and_start(conversation: Conversation, store, event: str) -> Message:
    reply, history = await store
    start(conversation.pk, reply, history)
    # Nothing below needs the database: the request's connection goes back to the pool now,
    # not when the response ends (conversations/db.py).
    await release_connection()
    await get_channel_layer().group_send(
        events.conversation_group(conversation.pk), {"type": event, "reply_id": str(reply.pk)}
    )
    # Rendered and sent after the request has its answer: the list is not on the way to the
    # reply's first token.
    _background(announce_sidebar_change(conversation.owner_id, in_request=False))
    return reply


async def announce_sidebar_change(owner_id: int, *, in_request: bool = True) -> None:
    """Send every open page of this user its new conversation list.

    In a request the list is rendered on the request's thread, with its connection; elsewhere
    (`in_request=False`) as a unit of work of its own (conversations/db.py).
    """
    render = database_sync_to_async if in_request else unit_of_work
    html = await render(fragments.conversation_list)(owner_id)
    await get_channel_layer().group_send(
        events.user_group(owner_id), {"type": events.SIDEBAR_CHANGED, "html": html}
    )


def start(conversation_id: uuid.UUID, reply: Message, history: list[dict[str, str]]) -> Generation:
    generation = Generation(
        conversation_id=conversation_id,
        message_id=reply.pk,
        history=history,
        lease=reply.lease,
        model=reply.metadata.get("model") or provider.default_model(),
        provider=reply.metadata.get("provider", ""),
        temperature=reply.metadata.get("temperature"),
    )
    # A fresh context: the task must not inherit the request's (its sync-to-async executor
    # dies with the request), since the reply outlives the request that started it.
    ensure_sweeper()
    ensure_writer()
    task = asyncio.get_running_loop().create_task(_run(generation), context=contextvars.Context())
    _running[reply.pk] = (generation, task)
    task.add_done_callback(_forget)
    return generation


def _forget(task: asyncio.Task) -> None:
    for message_id, (_, running) in list(_running.items()):
        if running is task:
            del _running[message_id]
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
            for generation, _ in list(_running.values()):
                generation.interrupt()
        await asyncio.sleep(0.05)


async def wait_for(message_id: uuid.UUID) -> None:
    """Wait until the generation of this reply, if running in this process, has finished."""
    entry = _running.get(message_id)
    if entry:
        await asyncio.shield(entry[1])


@functools.cache
def _stop_requests():
    """The cache that holds stop requests: one client for the whole process.

    `django.core.cache.cache` is a client per context, and every generation runs in a context
    of its own: with Redis, each reply opened a connection of its own for one GET.
    """
    return caches.create_connection("default")


def _stop_key(message_id: uuid.UUID) -> str:
    return f"stop-requested:{message_id.hex}"


async def request_stop(message_id: uuid.UUID) -> None:
    """Ask the generation of this reply to stop, whichever process runs it.

    A generation that has not yet joined its control group (it was started a moment ago)
    would miss the message, so the request is also left in the cache, where it looks first.
    """
    await unit_of_work(_stop_requests().set)(_stop_key(message_id), True, timeout=3600)
    await get_channel_layer().group_send(
        events.generation_group(message_id), {"type": events.GENERATION_STOP}
    )


def follow_here(message_id: uuid.UUID, inbox: asyncio.Queue, offset: int) -> bool:
    """Follow a reply that this process generates: `inbox` gets its text from `offset` at
    once, then each batch, then REPLY_DONE once the reply is stored in its final state.

    False when this process does not generate it (any more): the database then has its state,
    or another process has the generator (`request_follow`).
    """
    entry = _running.get(message_id)
    if entry is None or entry[0].finished:
        return False
    generation = entry[0]
    generation.inboxes.add(inbox)
    end = generation.relayable()
    if end > offset:
        inbox.put_nowait(events.delta(message_id, offset, generation.text[offset:end]))
    return True


def is_running_here(message_id: uuid.UUID) -> bool:
    """Whether this process generates the reply and has not finished it: the reply cannot end
    without its watchers here being told, so they need not ask the database."""
    entry = _running.get(message_id)
    return entry is not None and not entry[0].finished


def unfollow_here(message_id: uuid.UUID, inbox: asyncio.Queue) -> None:
    entry = _running.get(message_id)
    if entry:
        entry[0].inboxes.discard(inbox)


async def request_follow(message_id: uuid.UUID, reply_channel: str, offset: int) -> None:
    """Ask the generation, in whichever process, to send `reply_channel` its text from
    `offset` on, then each batch. Asked again, it answers again from the offset given."""
    await get_channel_layer().group_send(
        events.generation_group(message_id),
        {"type": events.GENERATION_FOLLOW, "reply_channel": reply_channel, "offset": offset},
    )


async def request_unfollow(message_id: uuid.UUID, reply_channel: str) -> None:
    await get_channel_layer().group_send(
        events.generation_group(message_id),
        {"type": events.GENERATION_UNFOLLOW, "reply_channel": reply_channel},
    )


async def _publish(generation: Generation) -> None:
    end = generation.relayable()
    if generation.published >= end:
        return
    start = generation.published
    event = events.delta(generation.message_id, start, generation.text[start:end])
    for inbox in generation.inboxes:
        inbox.put_nowait(event)
    if generation.channels:
        layer = get_channel_layer()
        for channel in list(generation.channels):
            try:
                await layer.send(channel, event)
            except Exception:
                # A full or vanished channel: its watcher sees the gap and asks again.
                logger.warning("Could not send reply %s to a watcher", generation.message_id)
    # Only once sent: the publish loop is cancelled at the end of a reply, possibly mid-send,
    # and the final publish must then send that text again (watchers drop what they have).
    generation.published = end


async def _publish_loop(generation: Generation) -> None:
    while True:
        await generation.changed.wait()
        generation.changed.clear()
        try:
            await _publish(generation)
        except Exception:
            # Watchers fill holes themselves (follow again, reconcile): carry on.
            logger.exception("Publishing reply %s failed", generation.message_id)
        await asyncio.sleep(settings.CHAT_DELTA_BATCH_SECONDS)


def ensure_writer() -> None:
    _ensure_forever(_write_forever)


# Set to have the writer write at once rather than at its next tick: a generator doubts its lease.
_write_now: asyncio.Event | None = None


def _confirm_leases_now() -> None:
    if _write_now is not None:
        _write_now.set()


async def _write_forever() -> None:
    """Every CHAT_FLUSH_SECONDS, store the text of every reply of this process that grew.

    A reply that did not grow is still written once per heartbeat period, so a healthy but
    silent stream (a model slow to start) is not taken for a dead one. A failed write loses
    nothing: the text stays with its generation and is written at the next tick, and one
    database hiccup does not stop the heartbeats. A reply whose lease is lost is told to stop.
    Asked to (`_confirm_leases_now`), it writes at once: a write confirms a lease.
    """
    global _write_now
    _write_now = write_now = asyncio.Event()
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
            for generation, _ in list(_running.values())
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


async def _control_loop(generation: Generation, channel: str) -> None:
    layer = get_channel_layer()
    while True:
        try:
            event = await layer.receive(channel)
        except Exception:
            logger.exception("Listening for reply %s failed", generation.message_id)
            await asyncio.sleep(1)
            continue
        kind = event.get("type")
        if kind == events.LISTENER_CLOSED:
            return
        if kind == events.GENERATION_STOP:
            generation.request_stop()
        elif kind == events.GENERATION_UNFOLLOW:
            generation.channels.discard(event["reply_channel"])
        elif kind == events.GENERATION_FOLLOW:
            offset = max(0, int(event.get("offset", 0)))
            generation.channels.add(event["reply_channel"])
            try:
                text = generation.text[offset : max(offset, generation.relayable())]
                await layer.send(
                    event["reply_channel"], events.delta(generation.message_id, offset, text)
                )
            except Exception:
                # A full or vanished watcher channel: that page will reconcile on its own.
                logger.warning("Could not answer a follow of reply %s", generation.message_id)


async def _read(generation: Generation, messages: list[dict[str, str]]) -> provider.ReplyEnd:
    end = None
    async for item in provider.stream_reply(
        messages,
        model=generation.model,
        provider=generation.provider,
        temperature=generation.temperature,
    ):
        if isinstance(item, provider.ReplyEnd):
            end = item
        else:
            generation.append(item)
    assert end is not None
    return end


async def _run(generation: Generation) -> None:
    layer = get_channel_layer()
    control_group = events.generation_group(generation.message_id)
    channel, control = "", None
    helpers = [asyncio.create_task(_publish_loop(generation))]
    started = time.monotonic()
    metadata: dict = {"model": generation.model, **_recorded_choice(generation)}
    status = Message.Status.ERROR
    try:
        messages, metadata["left_out"] = _fit_context(generation, generation.history)
        # The model is asked first; joining the control group costs round trips to the channel
        # layer, and a stop sent before it is joined is found in the cache below.
        generation.reader = asyncio.create_task(_read(generation, messages))
        channel = await layer.new_channel()
        await layer.group_add(control_group, channel)
        control = asyncio.create_task(_control_loop(generation, channel))
        if await unit_of_work(_stop_requests().get)(_stop_key(generation.message_id)):
            generation.request_stop()
        end = await generation.reader
        status = Message.Status.COMPLETE
        metadata.update(model=end.model, usage=end.usage, finish_reason=end.finish_reason)
    except provider.ProviderError as error:
        metadata["error"] = error.user_message
        metadata["error_kind"] = error.kind
    except asyncio.CancelledError:
        if not generation.cut_short:
            # This task was cancelled (its event loop is closing): store what arrived, then let
            # the cancellation go on.
            await _store_final(generation, Message.Status.INTERRUPTED, metadata, helpers)
            raise
        status = generation.cut_short
        if status == Message.Status.STOPPED:
            metadata["finish_reason"] = "stopped"
    except Exception:
        logger.exception("Generating reply %s failed", generation.message_id)
        metadata["error"] = "Something went wrong on the server while generating this reply."
        metadata["error_kind"] = "internal"
    finally:
        if generation.reader and not generation.reader.done():
            generation.reader.cancel()  # the channel layer failed: the reply ends with an error
        if control is not None:
            try:
                await layer.group_discard(control_group, channel)
                await _end_control_loop(control, channel)
            except Exception:
                # The reply's text is stored below whatever the channel layer does.
                logger.exception(
                    "Ending the control loop of reply %s failed", generation.message_id
                )
                control.cancel()
    first_token_at = generation.first_token_at
    metadata["timings"] = {
        "total_seconds": round(time.monotonic() - started, 3),
        "first_token_seconds": round(first_token_at - started, 3) if first_token_at else None,
    }
    await _store_final(generation, status, metadata, helpers)
    if (
        status == Message.Status.COMPLETE
        and settings.CHAT_AUTO_TITLE
        and not provider.is_offline(generation.provider)
    ):
        _background(_auto_title(generation.conversation_id, generation.model, generation.provider))


_background_tasks: set[asyncio.Task] = set()


def _background(coroutine) -> None:
    """Run `coroutine` after the work at hand, without delaying it; a failure is logged."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _background_tasks.add(task)
    task.add_done_callback(_background_done)


def _background_done(task: asyncio.Task) -> None:
    _background_tasks.discard(task)
    if not task.cancelled() and task.exception():
        logger.error("A background task failed", exc_info=task.exception())


TITLE_INSTRUCTIONS = (
    "You name conversations. Reply with a title of at most six words for the conversation "
    "below: no quotes, no final period, in the language of the conversation."
)


@unit_of_work
def _title_request(conversation_id: uuid.UUID) -> list[dict[str, str]] | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None or conversation.metadata.get("title_source"):
        return None  # deleted meanwhile, or named already
    first_two = list(
        conversation.messages.filter(superseded_by__isnull=True)
        .exclude(content="")
        .order_by("created_at")
        .values_list("role", "content")[:2]
    )
    excerpt = "\n\n".join(f"{role}: {content[:1500]}" for role, content in first_two)
    return [
        {"role": "system", "content": TITLE_INSTRUCTIONS},
        {"role": "user", "content": excerpt},
    ]


@unit_of_work
def _store_title(conversation_id: uuid.UUID, title: str) -> Conversation | None:
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None or conversation.metadata.get("title_source"):
            return None  # deleted, or named meanwhile (another reply, an operator): that stands
        conversation.metadata["title_source"] = "model" if title else "first-message"
        conversation.title = title or conversation.title
        conversation.save(update_fields=["title", "metadata"])
    return conversation if title else None


async def _auto_title(conversation_id: uuid.UUID, model: str, provider_slug: str = "") -> None:
    """Name the conversation from its first exchange; runs after the reply, never delaying it."""
    request = await _title_request(conversation_id)
    if request is None:
        return
    try:
        answer = await provider.complete(request, model=model, provider=provider_slug)
    except provider.ProviderError as error:
        logger.info("No title for conversation %s: %s", conversation_id, error.user_message)
        answer = ""
    title = title_from(answer.strip().splitlines()[0].strip(" \"'*#.")) if answer.strip() else ""
    # Asked once: without an answer the title made from the first message stays.
    conversation = await _store_title(conversation_id, title)
    if conversation:
        await get_channel_layer().group_send(
            events.conversation_group(conversation_id), {"type": events.CONVERSATION_TITLE}
        )
        await announce_sidebar_change(conversation.owner_id, in_request=False)


async def _end_control_loop(control: asyncio.Task, channel: str) -> None:
    # Ended by a message, not by cancellation: with channels-redis, a cancelled receive() can
    # hang for a long time inside the Redis client, and hold up the reply's final save with it.
    await get_channel_layer().send(channel, {"type": events.LISTENER_CLOSED})
    done, _ = await asyncio.wait([control], timeout=5)
    if not done:
        control.cancel()


async def _cancel_and_wait(tasks: list[asyncio.Task], give_up_after: float) -> None:
    """Cancel the tasks and wait for them to end, cancelling again any that carry on.

    On Python 3.11, asyncio.wait_for() swallows a cancellation that arrives just as its awaitable
    finishes (CPython gh-86296, fixed in 3.12), and redis-py wraps every command it sends in
    wait_for(): a helper cancelled mid-publish can simply keep running.
    """
    deadline = time.monotonic() + give_up_after
    pending = {task for task in tasks if not task.done()}
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)


# How long the final store of a reply is retried while the database cannot take it.
FINAL_STORE_SECONDS = 120
FINAL_STORE_MAX_PAUSE = 5.0


async def _store_until_done(generation: Generation, status: str, metadata: dict) -> bool:
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


async def _store_final(
    generation: Generation, status: str, metadata: dict, helpers: list[asyncio.Task]
) -> None:
    await _cancel_and_wait(helpers, give_up_after=5)
    # Stored first: the database is the record, the channel layer only tells the pages.
    if not await _store_until_done(generation, status, metadata):
        # Taken for dead and marked interrupted (its process was paused, say): the watchers
        # are told the reply ended, and read it as stored.
        logger.warning(
            "Reply %s was marked interrupted, or deleted, while it was generated: not stored",
            generation.message_id,
        )
    else:
        try:
            await _publish(generation)
        except Exception:
            logger.exception("Sending the end of reply %s failed", generation.message_id)
    generation.finished = True
    for inbox in generation.inboxes:
        inbox.put_nowait(events.reply_done(generation.message_id))
    try:
        await get_channel_layer().group_send(
            events.conversation_group(generation.conversation_id),
            events.reply_done(generation.message_id),
        )
    except Exception:
        logger.exception("Announcing the end of reply %s failed", generation.message_id)
