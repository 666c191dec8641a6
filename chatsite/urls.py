from django.contrib import admin
from django.urls import include, path

from accounts import tokens
from accounts.views import admin_login

admin.site.site_header = "chatsite administration"
admin.site.site_title = "chatsite admin"
# One sign-in for the whole site, with its limits on wrong passwords: the admin's is the site's.
admin.site.login = admin_login

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.urls")),
    path("account/tokens/", tokens.token_list, name="api_tokens"),
    path("account/tokens/<int:token_id>/revoke/", tokens.revoke_token, name="api_token_revoke"),
    path("api/", include("conversations.api.urls")),
    path("", include("conversations.urls")),
]

handler400 = "conversations.errors.bad_request"
handler403 = "conversations.errors.permission_denied"
handler404 = "conversations.errors.page_not_found"
handler500 = "conversations.errors.server_error"
