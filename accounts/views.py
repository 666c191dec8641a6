from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from conversations import providers

from .forms import DefaultsForm


@login_required
def account_settings(request: HttpRequest) -> HttpResponse:
    """The user's defaults for new conversations: model and system prompt."""
    user = request.user
    current = None
    if user.default_model:
        current = providers.resolve(user.default_provider, user.default_model)
    initial = {
        "model": current.value if current else "",
        "system_prompt": user.default_system_prompt,
    }
    form = DefaultsForm(request.POST or None, initial=initial, current=current)
    if request.method == "POST" and form.is_valid():
        form.save_to(user)
        messages.success(request, "Saved: new conversations start with these settings.")
        return redirect("account_settings")
    return render(request, "accounts/settings.html", {"form": form})
