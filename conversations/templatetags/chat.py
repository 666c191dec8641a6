from django import template
from django.utils.safestring import SafeString

from conversations.rendering import render_markdown, render_message_items

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return render_markdown(text or "")


@register.simple_tag(takes_context=True)
def message_items(context: template.Context, messages) -> SafeString:
    """The messages' items of the message list, each rendered by the `message` partial."""
    return render_message_items(messages, context["conversation"])
