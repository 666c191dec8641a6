from allauth.account.decorators import secure_admin_login
from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from conversations.llm import catalogue

from . import email_addresses
from .forms import DefaultsForm


@login_required
def account_settings(request: HttpRequest) -> HttpResponse:
    """The user's defaults for new conversations: model and system prompt."""
    user = request.user
    current = None
    if user.default_model:
        current = catalogue.resolve(user.default_provider, user.default_model)
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


@login_required
@require_http_methods(["GET", "POST"])
def confirm_added_email(request: HttpRequest, token: str) -> HttpResponse:
    """The link mailed to an address being added. GET asks, POST adds it (mail scanners follow
    links): only for the account that asked for it."""
    email = email_addresses.email_in_link(request.user, token)
    if email is None:
        return render(request, "accounts/email_add_confirm.html", status=400)
    if request.method == "POST":
        email_addresses.add_verified(request, request.user, email)
        return redirect("account_email")
    return render(request, "accounts/email_add_confirm.html", {"email": email})


_site_sign_in_for_the_admin = secure_admin_login(admin.site.login)


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """The admin's sign-in, replaced by the site's (`admin.site.login` in chatsite/urls.py).

    The admin's own form had no limit on wrong passwords. Visitors are sent to the site's
    sign-in, with its limits, and come back; staff go on to the admin; anyone else signed in is
    told why not, rather than sent round to sign in again.
    """
    user = request.user
    if user.is_authenticated and not (user.is_active and user.is_staff):
        return render(request, "accounts/admin_refused.html", status=403)
    return _site_sign_in_for_the_admin(request, extra_context)
