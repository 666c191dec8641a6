from django import template

from conversations.models import Conversation
from conversations.views.sharing import share_panel_context

register = template.Library()


@register.inclusion_tag("conversations/share_panel.html", takes_context=True)
def share_panel(context: template.Context, conversation: Conversation) -> dict:
    """The owner's share controls: the active link, or a button to create one."""
    # An inclusion tag starts a fresh context: the form needs the page's CSRF token passed on.
    return {
        **share_panel_context(context["request"], conversation),
        "csrf_token": context.get("csrf_token"),
    }
