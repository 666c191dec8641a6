from django.urls import path

from . import views

urlpatterns = [
    path("settings/", views.account_settings, name="account_settings"),
    path("email/add/<str:token>/", views.confirm_added_email, name="email_add_confirm"),
]
