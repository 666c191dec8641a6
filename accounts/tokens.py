"""Personal API tokens: the page where a user creates, lists and revokes them.

A new token's key is shown once: only its hash is stored. The POST that creates it redirects
(so reloading the page does not make another), and the key rides in the session to the page it
redirects to, which takes it out as it shows it.
"""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from .models import ApiToken

MAX_TOKENS_PER_USER = 50
NEW_KEY_SESSION_KEY = "api_token_new_key"


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        error_messages={"required": "Name the token after what will use it."},
    )


def _get_token_for_user(request: HttpRequest, token_id: int) -> ApiToken:
    return get_object_or_404(ApiToken, pk=token_id, user=request.user)


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the user's tokens, and a key just created. POST: create one."""
    form = TokenForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        if ApiToken.objects.active().filter(user=request.user).count() >= MAX_TOKENS_PER_USER:
            form.add_error(None, f"You have {MAX_TOKENS_PER_USER} tokens: revoke one first.")
        else:
            _, key = ApiToken.issue(request.user, form.cleaned_data["name"])
            request.session[NEW_KEY_SESSION_KEY] = key
            return redirect("api_tokens")
    context = {
        "form": form,
        "new_key": request.session.pop(NEW_KEY_SESSION_KEY, None),
        "tokens": ApiToken.objects.filter(user=request.user),
    }
    return render(request, "accounts/tokens.html", context)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke a token: the next request that carries it is refused."""
    _get_token_for_user(request, token_id).revoke()
    return redirect("api_tokens")
