from allauth.account import forms as allauth_forms
from allauth.account.adapter import get_adapter
from allauth.account.models import EmailAddress
from allauth.core import context, ratelimit
from django import forms
from django.contrib import messages
from django.contrib.auth.hashers import make_password
from django.http import HttpRequest

from conversations.forms import ModelChoiceField, system_prompt_field
from conversations.llm import catalogue, providers

from . import email_addresses


class DefaultsForm(forms.Form):
    """Where this user's new conversations start."""

    def __init__(self, *args, current: providers.ModelChoice | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        site = catalogue.default_choice()
        self.fields["model"] = ModelChoiceField(
            groups=catalogue.model_groups(keep=current),
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


class AddEmailForm(allauth_forms.AddEmailForm):
    """allauth's form on the email page (settings.ACCOUNT_FORMS): the address is only mailed a
    link, and stored once the link is followed (accounts/email_addresses.py)."""

    def clean_email(self) -> str:
        email = super().clean_email()
        if email_addresses.too_many_links(context.request, self.user, email):
            raise forms.ValidationError(
                "Too many new addresses lately: try again in an hour.", code="too_many_links"
            )
        return email

    def save(self, request: HttpRequest) -> EmailAddress:
        email = self.cleaned_data["email"]
        email_addresses.send_link(request, self.user, email)
        return EmailAddress(user=self.user, email=email)  # unsaved: nothing is stored yet


class SignupForm(allauth_forms.SignupForm):
    """allauth's signup form (settings.ACCOUNT_FORMS), answering a taken address as slowly and
    in the same words as a free one, so neither the time nor the page tells them apart."""

    def try_save(self, request: HttpRequest):
        if self.account_already_exists:
            # A new account's password is hashed, slowly on purpose: this one is too.
            make_password(self.cleaned_data["password1"])
            email = self.cleaned_data["email"]
            if not ratelimit.consume(
                request, action="confirm_email", key=email.lower(), dry_run=True
            ):
                # allauth mails the owner once every few minutes and, when it does not, says
                # nothing; a free address is always told a mail was sent.
                get_adapter(request).add_message(
                    request,
                    messages.INFO,
                    "account/messages/email_confirmation_sent.txt",
                    {"email": email, "login": False, "signup": True},
                )
        return super().try_save(request)
