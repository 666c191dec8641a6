"""The chat pages' websocket: consumers.py (what a page is sent), security.py (who may hold a
socket, for how long), slots.py (how many a user may hold) and routing.py."""
