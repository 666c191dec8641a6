"""The HTML pages and the POSTs behind them: chat.py (the chat page, sending, editing,
regenerating, stopping), manage.py (the conversation list, rename, pin, archive, delete, search),
model_settings.py (a conversation's model, prompt and temperature), usage.py (the usage page),
exports.py, sharing.py and theme.py."""
