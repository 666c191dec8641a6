"""What a user can do, each written once and called by the pages, the API and the websocket.

Each action takes plain values (the user or their conversation, text already checked by
conversations/forms.py), writes in a transaction, then tells the open pages what changed
(replies/announce.py, replies/events.py). A refusal is an exception the caller answers in its
own way, a page with its error area, the API with its JSON error:
- `turns.ReplyInProgress`: a reply is streaming already (one at a time);
- `turns.NothingToRegenerate`: no reply to generate again, or not the last message edited;
- `quota.UserLimitReached`: the user's tokens for today are spent, or they stream all the
  replies they may;
- `running.ProcessBusy`: this process streams all the replies it may.

One `do_*` function per action, as in zulip's zerver/actions/:
- actions/messages.py: start a conversation with its first message, send, edit, regenerate,
  stop;
- actions/conversations.py: create an empty conversation, rename, pin and unpin, archive and
  unarchive, delete.
Who may act on a conversation is checked before, by the caller, with conversations/access.py.
"""
