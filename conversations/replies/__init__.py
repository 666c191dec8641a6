"""Replies: how a reply is generated, stored, watched, stopped and resumed.

A reply runs as a server task of its own, not as part of a request or a socket; the database is
its record; watchers (a chat page's websocket, an API client's event stream) follow it.

- turns.py: storing a turn (the user's message and an empty reply) before the model is asked.
- generate.py: the run: asks the model, hands the text to watchers, stores the end.
- running.py: this process's replies, its cap on them, and its graceful stop.
- writer.py: the process's writer, which stores streaming text in batches and beats the heart.
- sweeper.py: marks replies whose process died as interrupted.
- stop.py: stopping a reply from any process.
- watching.py: following a reply from the text a watcher has, which is how a page reloaded
  mid-reply resumes; the one protocol behind the websocket and the API's event stream.
- events.py: event and group names, defined once; announce.py: telling a user's pages.
- quota.py: the usage ledger: reserving a reply's tokens and settling them.
- titles.py: naming a conversation after its first reply.
"""
