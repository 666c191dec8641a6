"""The model side: the only code that speaks to a model provider.

- client.py: the `openai` SDK client; `stream_reply()` yields text deltas and a final `ReplyEnd`,
  or raises a `ProviderError` written for the user.
- providers.py: which providers are configured (environment and the providers file).
- catalogue.py: the models each provider offers, and a conversation's choice resolved.
- offline.py: the built-in offline model, an OpenAI-compatible endpoint inside the process.
- context.py: fitting a conversation into a model's context window.

Nothing here imports the rest of the app: replies/ and the views call in, never the other way
round.
"""
