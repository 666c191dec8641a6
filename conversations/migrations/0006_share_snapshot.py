from django.db import migrations, models
from django.db.models import Q

STREAMING = "streaming"  # Message.Status.STREAMING


def snapshot_live_links(apps, schema_editor):
    """Each live link made before snapshots is frozen as it shows now: the conversation's title
    as it is, and the messages that were current when the link was made, as ShareLink.messages
    chose them then, less a reply still being written. Revoked links answer 404 whatever they
    hold, and keep no copy."""
    ShareLink = apps.get_model("conversations", "ShareLink")
    Message = apps.get_model("conversations", "Message")
    live = ShareLink.objects.filter(revoked_at__isnull=True).select_related("conversation")
    for share in live.iterator():
        moment = share.created_at
        current_then = Q(superseded_by__isnull=True) | Q(superseded_by__created_at__gt=moment)
        candidates = (
            Message.objects.filter(current_then, conversation_id=share.conversation_id)
            .filter(created_at__lte=moment)
            .exclude(status=STREAMING)
            .order_by("created_at")
        )
        # The versions one message replaced later hold one place; the newest was current then.
        by_place = {}
        for message in candidates:
            by_place[message.superseded_by_id or message.pk] = message
        shown = sorted(by_place.values(), key=lambda message: message.created_at)
        share.title = share.conversation.title
        share.snapshot = [
            {"id": str(m.pk), "role": m.role, "status": m.status, "content": m.content}
            for m in shown
        ]
        share.save(update_fields=["title", "snapshot"])


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0005_usage_ledger"),
    ]

    operations = [
        migrations.AddField(
            model_name="sharelink",
            name="title",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="sharelink",
            name="snapshot",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(snapshot_live_links, migrations.RunPython.noop),
    ]
