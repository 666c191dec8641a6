"""Personal API tokens: the page where a user creates, lists and revokes them.

A new token's key is shown once, in the answer to the POST that creates it, and is stored
nowhere: only its hash is kept, never the key, not even in the session on its way to a page.
The page posts with htmx and swaps in the answer, so reloading the page makes no other token.
"""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from .models import ApiToken

MAX_TOKENS_PER_USER = 50


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        error_messages={"required": "Name the token after what will use it."},
    )


def _get_token_for_user(request: HttpRequest, token_id: int) -> ApiToken:
    return get_object_or_404(ApiToken, pk=token_id, user=request.user)


@never_cache  # the answer to a POST carries a key
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the user's tokens. POST: create one, and show its key in the answer."""
    form = TokenForm(request.POST if request.method == "POST" else None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        if ApiToken.objects.active().filter(user=request.user).count() >= MAX_TOKENS_PER_USER:
            form.add_error(None, f"You have {MAX_TOKENS_PER_USER} tokens: revoke one first.")
        else:
            _, new_key = ApiToken.issue(request.user, form.cleaned_data["name"])
            form = TokenForm()
    context = {
        "form": form,
        "new_key": new_key,
        "tokens": ApiToken.objects.filter(user=request.user),
    }
    template = "accounts/tokens.html#token-panel" if request.htmx else "accounts/tokens.html"
    return render(request, template, context)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke a token: the next request that carries it is refused."""
    _get_token_for_user(request, token_id).revoke()
    return redirect("api_tokens")
