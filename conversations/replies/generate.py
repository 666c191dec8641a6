"""Generating a reply: a unit of work of its own, independent of any websocket.

`begin()` stores the user's message and an empty assistant reply (replies/turns.py), then starts
a task on the running event loop that streams the reply from the provider (conversations/llm/).
Closing the tab does not stop it.

While it runs, the task
- hands its text in batches to the watchers that follow it (replies/watching.py): directly to
  those in this process, through the channel layer to those in others,
- has the process's writer (replies/writer.py) store the text so far at a bounded cadence (never
  a write per token), which also serves as a heartbeat: a reply whose heartbeat stops is marked
  interrupted by the sweeper (replies/sweeper.py),
- listens on its own channel for a stop (replies/stop.py, from any process) and for watchers of
  other processes that follow or unfollow it,
and finally stores the reply once, with model and usage, and announces that it is done.

Each write names the reply's lease, a token stored with the reply when it starts. Marking a
reply interrupted clears it: a generator whose process was paused long enough to be taken for
dead finds its lease gone at its next write, stops at once and never writes again, so it cannot
overwrite what the conversation became meanwhile. Nor does it hand its watchers text it
received after the pause (`Generation.relayable`, replies/running.py).
"""

import asyncio
import contextvars
import logging
import time
import uuid

from channels.layers import get_channel_layer
from django.conf import settings

from conversations.db import release_connection
from conversations.llm import client, context, providers
from conversations.models import Conversation, Message
from conversations.replies import announce, events, running, stop, sweeper, titles, turns, writer
from conversations.replies.running import Generation

logger = logging.getLogger(__name__)


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
        raise client.ProviderError(
            f"This message is too long for {generation.model}: with the system prompt and "
            f"room for the reply it needs about {fitted.needed_tokens:,} tokens, and the "
            f"model's context window holds {fitted.window:,}. Shorten it, or choose a model "
            "with a larger context window in the conversation's settings.",
            kind="context",
        )
    return fitted.messages, fitted.left_out


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
    with running.admission():
        event = events.CONVERSATION_REFRESH if replacing else events.CONVERSATION_TURN
        store = turns.store_turn(conversation, text, replacing=replacing)
        return await _detached(_store_and_start(conversation, store, event))


async def regenerate(conversation: Conversation) -> Message:
    """Generate the last reply again; the previous one is kept as an earlier version."""
    with running.admission():
        store = turns.store_regeneration(conversation)
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
    running.background(announce.sidebar_changed(conversation.owner_id, in_request=False))
    return reply


def start(conversation_id: uuid.UUID, reply: Message, history: list[dict[str, str]]) -> Generation:
    generation = Generation(
        conversation_id=conversation_id,
        message_id=reply.pk,
        history=history,
        lease=reply.lease,
        model=reply.metadata.get("model") or client.default_model(),
        provider=reply.metadata.get("provider", ""),
        temperature=reply.metadata.get("temperature"),
    )
    # A fresh context: the task must not inherit the request's (its sync-to-async executor
    # dies with the request), since the reply outlives the request that started it.
    sweeper.ensure_sweeper()
    writer.ensure_writer()
    task = asyncio.get_running_loop().create_task(_run(generation), context=contextvars.Context())
    running.generations[reply.pk] = (generation, task)
    task.add_done_callback(running.forget)
    return generation


async def _publish(generation: Generation) -> None:
    end = generation.relayable()
    if generation.published >= end:
        return
    start = generation.published
    event = events.delta(generation.message_id, start, generation.text[start:end])
    for inbox in generation.inboxes:
        inbox.put_nowait(event)
    generation.handed_out = max(generation.handed_out, end)
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
                end = max(offset, generation.relayable())
                text = generation.text[offset:end]
                await layer.send(
                    event["reply_channel"], events.delta(generation.message_id, offset, text)
                )
                generation.handed_out = max(generation.handed_out, end)
            except Exception:
                # A full or vanished watcher channel: that page will reconcile on its own.
                logger.warning("Could not answer a follow of reply %s", generation.message_id)


async def _read(generation: Generation, messages: list[dict[str, str]]) -> client.ReplyEnd:
    end = None
    async for item in client.stream_reply(
        messages,
        model=generation.model,
        provider=generation.provider,
        temperature=generation.temperature,
    ):
        if isinstance(item, client.ReplyEnd):
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
        if await stop.stop_requested(generation.message_id):
            generation.request_stop()
        end = await generation.reader
        status = Message.Status.COMPLETE
        metadata.update(model=end.model, usage=end.usage, finish_reason=end.finish_reason)
    except client.ProviderError as error:
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
        and not client.is_offline(generation.provider)
    ):
        running.background(
            titles.auto_title(generation.conversation_id, generation.model, generation.provider)
        )


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


async def _store_final(
    generation: Generation, status: str, metadata: dict, helpers: list[asyncio.Task]
) -> None:
    await _cancel_and_wait(helpers, give_up_after=5)
    # Stored first: the database is the record, the channel layer only tells the pages.
    if not await writer.store_until_done(generation, status, metadata):
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
