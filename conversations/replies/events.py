"""The realtime protocol, defined once: channel-layer groups, event types and their messages,
and the names of the events an API client reads while a reply streams.

Who hears what:
- `user_group(user_id)`: every open page of a user (the conversation list changed);
- `conversation_group(conversation_id)`: every page open on a conversation (a new turn, a
  rewritten end, a finished reply, a new title);
- `generation_group(reply_id)`: the one task generating a reply, in whichever process (stop,
  follow, unfollow).

A page's socket closes with a code of its own when the page must not simply reconnect
(static/js/chat.js reads them): its sign-in ended, or its user has too many sockets open.

Reply text is not sent to a group. A watcher follows a streaming reply: in the generating
process it is handed each batch directly; in another process the generator sends the batches
to the watcher's own channel (FOLLOW, with the offset the watcher has). Every delta carries the
offset of its first character, so a watcher trims repeats and asks again from its offset when
it sees a gap (conversations/replies/watching.py).
"""

import hashlib
import uuid

# To pages: the user's conversation list, rendered once for all of them.
SIDEBAR_CHANGED = "sidebar.changed"
# To a user's pages: a sign-in ended (logout, password change, deactivation), and with it the
# sockets of one session (`session`, a digest of its key) or of all (`session` empty).
SESSION_ENDED = "session.ended"
# To pages on a conversation.
CONVERSATION_TURN = "conversation.turn"  # a question and its (streaming) reply were added
CONVERSATION_REFRESH = "conversation.refresh"  # the end was rewritten (edit, regenerate)
CONVERSATION_TITLE = "conversation.title"
REPLY_DONE = "reply.done"  # the reply is stored in its final state
# To a watcher: text of a streaming reply from `start` on.
REPLY_DELTA = "reply.delta"
# To a generator.
GENERATION_STOP = "generation.stop"
GENERATION_FOLLOW = "generation.follow"  # send `reply_channel` the text from `offset`, then more
GENERATION_UNFOLLOW = "generation.unfollow"
# To a listener of our own, to end its receive loop (cancelling a receive hurts channels-redis).
LISTENER_CLOSED = "listener.closed"

# The API's server-sent events of a reply (conversations/api.py, documented in api_schema.py).
STREAM_START = "start"  # the stored question and the reply's first state
STREAM_DELTA = "delta"  # the next piece of the reply's text
STREAM_DONE = "done"  # the reply as stored, at the end
STREAM_ERROR = "error"  # instead of `done`: the stream cannot follow the reply any further
STREAM_KEEPALIVE = "keep-alive"  # a comment, not an event, while the model is silent


# Close codes (private range 4000-4999; htmx reconnects only after 1006, 1011, 1012, 1013).
CLOSED_SIGNED_OUT = 4401  # the socket's sign-in ended: the page checks whether it still has one
CLOSED_TOO_MANY_SOCKETS = 4429  # CHAT_MAX_SOCKETS_PER_USER are open: the page says so and stays


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def conversation_group(conversation_id: uuid.UUID) -> str:
    return f"conversation-{conversation_id.hex}"


def generation_group(reply_id: uuid.UUID) -> str:
    return f"generation-{reply_id.hex}"


def delta(reply_id: uuid.UUID | str, start: int, text: str) -> dict:
    return {"type": REPLY_DELTA, "reply_id": str(reply_id), "start": start, "text": text}


def reply_done(reply_id: uuid.UUID | str) -> dict:
    return {"type": REPLY_DONE, "reply_id": str(reply_id)}


def session_digest(session_key: str | None) -> str:
    """Names a session in events without putting its key, a credential, on the channel layer."""
    return hashlib.sha256(session_key.encode()).hexdigest() if session_key else ""


def session_ended(session_key: str | None = None) -> dict:
    """The sockets of session `session_key` must close; with no key, all of the user's."""
    return {"type": SESSION_ENDED, "session": session_digest(session_key)}
