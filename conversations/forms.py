"""The forms that check what a person sends: a message, a conversation's name, and the settings
of a conversation (model, system prompt, temperature) and where they start from. The pages and
the API check with the same forms."""

from django import forms
from django.conf import settings

from conversations.llm import catalogue, providers
from conversations.models import TITLE_MAX_LENGTH

SYSTEM_PROMPT_MAX_CHARS = 20_000
# The code of MessageForm's error for a message over CHAT_MAX_MESSAGE_CHARS (the API answers it
# with a 413 of its own).
MESSAGE_TOO_LONG = "message_too_long"


class MessageForm(forms.Form):
    text = forms.CharField(
        strip=True,
        error_messages={"required": "Write a message first."},
    )

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        limit = settings.CHAT_MAX_MESSAGE_CHARS
        if len(text) > limit:
            raise forms.ValidationError(
                f"This message is {len(text):,} characters long; the limit is {limit:,}.",
                code=MESSAGE_TOO_LONG,
            )
        return text


class RenameForm(forms.Form):
    title = forms.CharField(
        strip=True,
        error_messages={"required": "Give the conversation a name."},
    )

    def clean_title(self) -> str:
        title = " ".join(self.cleaned_data["title"].split())
        if len(title) > TITLE_MAX_LENGTH:
            raise forms.ValidationError(
                f"A name is at most {TITLE_MAX_LENGTH} characters long; this one has {len(title)}."
            )
        return title


class ModelChoiceField(forms.ChoiceField):
    """A model picker: options grouped by provider, each value looked up, never parsed."""

    def __init__(self, *, groups: list[catalogue.ModelGroup], blank: str = "", **kwargs) -> None:
        self.by_value = {choice.value: choice for group in groups for choice in group.choices}
        choices: list = [("", blank)] if blank else []
        choices += [
            (group.provider.label, [(choice.value, choice.model) for choice in group.choices])
            for group in groups
        ]
        super().__init__(choices=choices, **kwargs)


def temperature_field() -> forms.FloatField:
    return forms.FloatField(
        label="Temperature",
        required=False,
        min_value=0,
        max_value=2,
        widget=forms.NumberInput(attrs={"step": "0.1", "placeholder": "provider default"}),
        help_text="0 to 2: lower is more focused, higher more varied. Blank: the provider's.",
    )


def system_prompt_field() -> forms.CharField:
    site_prompt = settings.CHAT_SYSTEM_PROMPT
    return forms.CharField(
        label="System prompt",
        required=False,
        strip=True,
        max_length=SYSTEM_PROMPT_MAX_CHARS,
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": site_prompt or "Instructions the model follows"}
        ),
        help_text="Blank: the site's system prompt." if site_prompt else "",
    )


class ConversationSettingsForm(forms.Form):
    def __init__(self, *args, current: providers.ModelChoice | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.groups = catalogue.model_groups(keep=current)
        self.fields["model"] = ModelChoiceField(
            groups=self.groups, label="Model", error_messages={"required": "Choose a model."}
        )
        self.fields["system_prompt"] = system_prompt_field()
        self.fields["temperature"] = temperature_field()

    def as_metadata(self) -> dict:
        """The settings as a conversation's metadata stores them."""
        chosen = self.fields["model"].by_value[self.cleaned_data["model"]]
        temperature = self.cleaned_data["temperature"]
        return {
            "provider": chosen.provider.slug,
            "model": chosen.model,
            "system_prompt": self.cleaned_data["system_prompt"],
            "temperature": None if temperature is None else round(temperature, 2),
        }


def defaults_for(user) -> dict:
    """The settings a new conversation of this user starts with: their defaults, else the
    site's. A default model whose provider is gone gives way to the site's default."""
    chosen = catalogue.default_choice()
    if user.default_model and providers.get(user.default_provider) is not None:
        chosen = catalogue.resolve(user.default_provider, user.default_model)
    return {
        "provider": chosen.provider.slug,
        "model": chosen.model,
        "system_prompt": user.default_system_prompt,
        "temperature": None,
    }


def form_for(metadata: dict, data=None) -> ConversationSettingsForm:
    """The settings form showing `metadata` (a conversation's, or a new one's defaults)."""
    current = catalogue.for_conversation(metadata)
    initial = {
        "model": current.value,
        "system_prompt": metadata.get("system_prompt", ""),
        "temperature": metadata.get("temperature"),
    }
    return ConversationSettingsForm(data, initial=initial, current=current)
