"""The one watcher protocol (replies/watching.py), behind both the websocket and the API:
a watcher follows a reply from the text it has, trims repeats, asks again after a gap, and
takes the database's word for how the reply ends."""

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from conversations.models import Message
from conversations.replies import events, generate, running, watching
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def streaming_reply(conversation) -> Message:
    return await Message.objects.acreate(
        conversation=conversation, role="assistant", status=Message.Status.STREAMING
    )


async def test_a_watcher_trims_repeats_and_asks_again_after_a_gap(conversation):
    """Against a generator in another process, stood in for by a channel in its group."""
    reply = await streaming_reply(conversation)
    key = str(reply.pk)
    layer = get_channel_layer()
    generator = await layer.new_channel()
    await layer.group_add(events.generation_group(reply.pk), generator)
    follower = watching.Follower(await layer.new_channel())

    await follower.follow(key, 3)  # the page shows "Hel" already
    follow = await asyncio.wait_for(layer.receive(generator), 5)
    repeat = await follower.fresh_text(events.delta(key, 0, "Hello"))
    gap = await follower.fresh_text(events.delta(key, 9, "Z"))
    asked_again = await asyncio.wait_for(layer.receive(generator), 5)
    filled = await follower.fresh_text(events.delta(key, 5, " XYZ"))
    await follower.close()
    unfollow = await asyncio.wait_for(layer.receive(generator), 5)

    assert follow == {
        "type": events.GENERATION_FOLLOW,
        "reply_channel": follower.channel,
        "offset": 3,
    }
    assert (repeat, gap, filled) == ("lo", "", " XYZ")
    assert asked_again["type"] == events.GENERATION_FOLLOW and asked_again["offset"] == 5
    assert unfollow == {"type": events.GENERATION_UNFOLLOW, "reply_channel": follower.channel}


async def test_an_unanswered_follow_is_asked_again(conversation, settings):
    reply = await streaming_reply(conversation)
    layer = get_channel_layer()
    generator = await layer.new_channel()
    await layer.group_add(events.generation_group(reply.pk), generator)
    follower = watching.Follower(await layer.new_channel())
    await follower.follow(str(reply.pk), 0)
    first = await asyncio.wait_for(layer.receive(generator), 5)

    follower.asked[str(reply.pk)] -= watching.ASK_AGAIN_SECONDS  # a second has passed
    await follower.ask_again_if_unanswered()
    again = await asyncio.wait_for(layer.receive(generator), 5)
    await follower.close()

    assert first == again


async def test_a_reply_generated_here_is_handed_over_without_the_channel_layer(
    conversation, fake_openai, monkeypatch
):
    fake_openai.script(Reply(chunks=["One ", "two ", "three."], delay=0.02))
    sent_through_the_layer = []
    layer = get_channel_layer()
    original_send = layer.send

    async def send(channel, message):
        sent_through_the_layer.append(message["type"])
        await original_send(channel, message)

    monkeypatch.setattr(layer, "send", send)

    reply = await generate.begin(conversation, "Count")
    received = [item async for item in watching.reply_events(reply.pk)]

    texts = [data for kind, data in received if kind == "delta"]
    kind, stored = received[-1]
    assert kind == "done"
    assert stored.status == Message.Status.COMPLETE
    assert "".join(texts) == stored.content == "One two three."
    assert len(texts) > 1  # streamed, not handed over whole at the end
    assert events.REPLY_DELTA not in sent_through_the_layer


async def test_a_finished_reply_is_read_from_the_database(conversation):
    reply = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status=Message.Status.STOPPED,
        content="Stopped here",
    )

    received = [item async for item in watching.reply_events(reply.pk)]

    assert received[0] == ("delta", "Stopped here")
    assert received[1][0] == "done" and received[1][1].status == Message.Status.STOPPED


async def test_a_deleted_reply_is_reported_gone(conversation):
    with pytest.raises(watching.ReplyGone):
        async for _ in watching.reply_events(uuid.uuid4()):
            pass


async def test_a_page_in_another_process_gets_the_text_through_its_channel(
    conversation, fake_openai
):
    """The generator sends a follower of another process its text on the follower's channel:
    from the follower's offset at once, then every batch."""
    fake_openai.script(Reply(chunks=[f"w{n} " for n in range(30)], delay=0.02))
    layer = get_channel_layer()
    channel = await layer.new_channel()
    reply = await generate.begin(conversation, "Count")
    await asyncio.sleep(0.1)  # the generator has joined its group
    await watching.request_follow(reply.pk, channel, 0)
    follower = watching.Follower(channel)
    follower.offsets[str(reply.pk)] = 0
    text = ""
    async with asyncio.timeout(10):
        while len(text) < len("".join(f"w{n} " for n in range(30))):
            text += await follower.fresh_text(await layer.receive(channel))
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()

    assert text == reply.content


@pytest.mark.live
async def test_a_quiet_reply_generated_here_is_waited_for_not_polled(
    conversation, fake_openai, settings, monkeypatch
):
    """While the model is silent, an API stream sends keep-alives and asks neither the database
    (the generator is here) nor, in a loop, anything else."""
    settings.CHAT_STALE_SECONDS = 3  # a reconcile period of one second
    settings.CHAT_API_KEEPALIVE_SECONDS = 1
    fake_openai.script(Reply(chunks=["Hmm", " yes."], stall_after=1, stall_seconds=2.5))
    looked_up, asked_here = [], []
    original_lookup, original_here = watching.stored_if_finished, running.is_running_here

    async def counted_lookup(reply_id):
        looked_up.append(reply_id)
        return await original_lookup(reply_id)

    def counted_here(reply_id):
        asked_here.append(reply_id)
        return original_here(reply_id)

    monkeypatch.setattr(watching, "stored_if_finished", counted_lookup)
    monkeypatch.setattr(running, "is_running_here", counted_here)

    reply = await generate.begin(conversation, "Think")
    received = [item async for item in watching.reply_events(reply.pk)]

    kinds = [kind for kind, _ in received]
    assert kinds.count("keep-alive") >= 1
    assert received[-1][0] == "done" and received[-1][1].content == "Hmm yes."
    assert len(looked_up) == 1  # once, when the generator said it was done
    assert len(asked_here) < 10  # about once a second of silence, not a busy loop
