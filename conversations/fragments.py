"""HTML fragments pushed to open pages, rendered once per event rather than once per page."""

from django.template.loader import render_to_string

from conversations.sidebar import sidebar_page


def conversation_list(owner_id: int) -> str:
    """The sidebar's conversation list, swapped in by id. Which entry is the current page is
    marked in the browser (static/js/chat.js), so one rendering serves every open tab."""
    return render_to_string(
        "conversations/chat.html#conversation-list",
        {"sidebar": sidebar_page(owner_id), "oob": True},
    )
