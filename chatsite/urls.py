from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "chatsite administration"
admin.site.site_title = "chatsite admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.urls")),
    path("", include("conversations.urls")),
]
