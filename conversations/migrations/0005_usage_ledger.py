import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

BATCH = 2000


def copy_usage_into_the_ledger(apps, schema_editor):
    """One settled entry per reply already stored, with the figures the provider reported, so
    that usage history and today's quota carry over. A reply stored without a report counted
    for nothing before and still does; one still streaming is reserved, and settled like any
    other once it ends or is found interrupted."""
    Message = apps.get_model("conversations", "Message")
    UsageEntry = apps.get_model("conversations", "UsageEntry")
    replies = (
        Message.objects.filter(role="assistant")
        .values_list(
            "pk", "conversation_id", "conversation__owner_id", "created_at", "status", "metadata"
        )
        .order_by("created_at")
    )
    batch = []
    for pk, conversation_id, owner_id, created_at, status, metadata in replies.iterator(chunk_size=BATCH):
        metadata = metadata or {}
        usage = metadata.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        streaming = status == "streaming"
        batch.append(
            UsageEntry(
                user_id=owner_id,
                created_at=created_at,
                model=metadata.get("model") or "",
                provider=metadata.get("provider") or "",
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=int(usage.get("total_tokens") or prompt + completion),
                state="reserved" if streaming else "settled",
                source="reported" if usage else "estimated",
                settled_at=None if streaming else created_at,
                reply_id=pk,
                conversation_id=conversation_id,
                message_id=pk,
            )
        )
        if len(batch) >= BATCH:
            UsageEntry.objects.bulk_create(batch)
            batch = []
    UsageEntry.objects.bulk_create(batch)


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0004_message_search_document'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('model', models.TextField(blank=True)),
                ('provider', models.TextField(blank=True)),
                ('prompt_tokens', models.PositiveIntegerField(default=0)),
                ('completion_tokens', models.PositiveIntegerField(default=0)),
                ('total_tokens', models.PositiveIntegerField(default=0)),
                ('state', models.CharField(choices=[('reserved', 'Reserved'), ('settled', 'Settled')], default='reserved', max_length=16)),
                ('source', models.CharField(choices=[('estimated', 'Estimated'), ('reported', 'Reported by the provider')], default='estimated', max_length=16)),
                ('settled_at', models.DateTimeField(blank=True, null=True)),
                ('reply_id', models.UUIDField(blank=True, null=True, unique=True)),
                ('conversation', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='conversations.conversation')),
                ('message', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='conversations.message')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='usage_entries', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name_plural': 'usage entries',
                'ordering': ['-created_at'],
                'indexes': [models.Index(fields=['user', 'created_at'], name='usage_user_day'), models.Index(fields=['created_at'], name='usage_period'), models.Index(condition=models.Q(('state', 'reserved')), fields=['created_at'], name='usage_reserved')],
            },
        ),
        migrations.RunPython(copy_usage_into_the_ledger, migrations.RunPython.noop),
    ]
