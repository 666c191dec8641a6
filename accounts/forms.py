from django import forms

from conversations import providers
from conversations.settings_forms import ModelChoiceField, system_prompt_field


class DefaultsForm(forms.Form):
    """Where this user's new conversations start."""

    def __init__(self, *args, current: providers.ModelChoice | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        site = providers.default_choice()
        self.fields["model"] = ModelChoiceField(
            groups=providers.model_groups(keep=current),
            blank=f"Site default ({site.model} · {site.provider.label})",
            label="Default model",
            required=False,
        )
        self.fields["system_prompt"] = system_prompt_field()
        self.fields["system_prompt"].label = "Default system prompt"

    def save_to(self, user) -> None:
        chosen = self.fields["model"].by_value.get(self.cleaned_data["model"])
        user.default_provider = chosen.provider.slug if chosen else ""
        user.default_model = chosen.model if chosen else ""
        user.default_system_prompt = self.cleaned_data["system_prompt"]
        user.save(update_fields=["default_provider", "default_model", "default_system_prompt"])
