"""Addresses added to an account before they had to be confirmed (accounts/email_addresses.py)
and never confirmed: they signed in whoever added them and kept their owners from signing up.
An account's own address (the one it signs in with, User.email) is kept, confirmed or not."""

from django.db import migrations
from django.db.models import F


def forget_unverified_added_addresses(apps, schema_editor) -> None:
    EmailAddress = apps.get_model("account", "EmailAddress")
    EmailAddress.objects.filter(verified=False, primary=False).exclude(
        email__iexact=F("user__email")
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_api_tokens"),
        ("account", "0009_emailaddress_unique_primary_email"),
    ]

    operations = [
        migrations.RunPython(forget_unverified_added_addresses, migrations.RunPython.noop),
    ]
