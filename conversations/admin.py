import re
from datetime import date, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Count
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path

from conversations import usage
from conversations.models import Conversation, Message, UsageEntry


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        models = (
            Message.objects.filter(role=Message.Role.ASSISTANT)
            .values_list("metadata__model", flat=True)
            .distinct()
        )
        return [(name, name) for name in sorted({m for m in models if m})]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(metadata__model=self.value())
        return queryset


class DrillDownChangeList(ChangeList):
    """Django's change list, with a date drill-down past the calendar's end (the year 9999, its
    December, its last day) refused as any filter it cannot apply is: back to the list. Django
    computes the end of the period without checking, and fails with a server error."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


class DrillDownAdmin(admin.ModelAdmin):
    def get_changelist(self, request, **kwargs):
        return DrillDownChangeList


# PostgreSQL's jsonb refuses NUL; UTF-8 cannot encode half a surrogate pair (JSON can spell
# both, as \u0000 and \ud800).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: object) -> bool:
    """Whether no string in a JSON value, key or value, holds an UNSTORABLE character. Without
    recursion, whatever the value's depth."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and UNSTORABLE.search(item):
            return False
        if isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


class StorableJSONField(forms.JSONField):
    """The admin's JSON box, refusing what it cannot store or read with a message instead of a
    server error: NUL characters and lone surrogates, and JSON nested too deeply to parse. Such
    input is shown again as it was typed."""

    def to_python(self, value):
        try:
            converted = super().to_python(value)
        except RecursionError:
            raise ValidationError("This JSON is nested too deeply.", code="invalid") from None
        if not _storable(converted):
            raise ValidationError(
                "JSON here cannot hold a null character (\\u0000) or a lone UTF-16 surrogate "
                "(\\ud800 to \\udfff).",
                code="invalid",
            )
        return converted

    def bound_data(self, data, initial):
        try:
            bound = super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)
        return bound if _storable(bound) else InvalidJSONInput(data)


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["created_at", "role", "status", "content", "metadata"]
    readonly_fields = fields
    ordering = ["created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(DrillDownAdmin):
    list_display = ["display_title", "owner", "message_count", "created_at", "updated_at"]
    list_filter = ["created_at", "updated_at"]
    search_fields = ["title", "owner__email"]
    date_hierarchy = "created_at"
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["id", "owner", "created_at", "updated_at"]
    fields = ["id", "owner", "title", "metadata", "created_at", "updated_at"]
    inlines = [MessageInline]
    formfield_overrides = {models.JSONField: {"form_class": StorableJSONField}}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_total=Count("messages"))

    @admin.display(description="Title", ordering="title")
    def display_title(self, conversation: Conversation) -> str:
        return conversation.display_title

    @admin.display(description="Messages", ordering="message_total")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.message_total


@admin.register(Message)
class MessageAdmin(DrillDownAdmin):
    list_display = [
        "short_content", "role", "status", "reply_model", "prompt_tokens", "completion_tokens",
        "total_tokens", "conversation_owner", "created_at",
    ]  # fmt: skip
    list_filter = ["role", "status", ("created_at", admin.DateFieldListFilter), ModelFilter]
    search_fields = ["content", "conversation__title", "conversation__owner__email"]
    list_select_related = ["conversation__owner"]
    date_hierarchy = "created_at"
    # History is evidence: the text, role and model's report are not editable after the fact.
    readonly_fields = [
        "id",
        "conversation",
        "role",
        "content",
        "created_at",
        "updated_at",
        "metadata",
    ]
    fields = [
        "id",
        "conversation",
        "role",
        "status",
        "content",
        "metadata",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="Content")
    def short_content(self, message: Message) -> str:
        return message.content[:80] or "(empty)"

    @admin.display(description="Owner", ordering="conversation__owner__email")
    def conversation_owner(self, message: Message) -> str:
        return message.conversation.owner.email

    # Not `model`: a ModelAdmin's `model` is the model class it administers.
    @admin.display(description="Model", ordering="metadata__model")
    def reply_model(self, message: Message) -> str:
        return message.metadata.get("model", "")

    @admin.display(description="Prompt tokens")
    def prompt_tokens(self, message: Message):
        return message.usage.get("prompt_tokens")

    @admin.display(description="Completion tokens")
    def completion_tokens(self, message: Message):
        return message.usage.get("completion_tokens")

    @admin.display(description="Total tokens")
    def total_tokens(self, message: Message):
        return message.usage.get("total_tokens")

    # Token totals per user and per model: a page of its own, under the messages.
    change_list_template = "admin/conversations/message/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view(self.usage_view)
        return [path("usage/", view, name="conversations_message_usage"), *super().get_urls()]

    def usage_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = usage.today()
        form = UsagePeriodForm(request.GET or {"since": today - timedelta(days=29), "until": today})
        since = until = None
        if form.is_valid():
            since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        start = usage.start_of_day(since) if since else None
        end = usage.start_of_day(until + timedelta(days=1)) if until else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Token usage",
            "opts": self.model._meta,
            "form": form,
            "time_zone": settings.TIME_ZONE,
            "since": since,
            "until": until,
            "presets": [
                ("Today", today, today),
                ("Last 7 days", today - timedelta(days=6), today),
                ("Last 30 days", today - timedelta(days=29), today),
                ("All time", "", ""),
            ],
            "by_user": usage.totals_by_user(start, end),
            "by_model": usage.totals_by_model(start, end),
        }
        status = 400 if form.errors else 200
        return TemplateResponse(request, "admin/conversations/usage.html", context, status=status)


# A day whose start and end are moments in every time zone: not the calendar's first or last.
FIRST_DAY, LAST_DAY = date.min + timedelta(days=1), date.max - timedelta(days=1)
DAY_RANGE = f"Choose a day from {FIRST_DAY:%-d %B} 1 to {LAST_DAY:%-d %B %Y}."


def _period_day() -> forms.DateField:
    return forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        validators=[
            MinValueValidator(FIRST_DAY, message=DAY_RANGE),
            MaxValueValidator(LAST_DAY, message=DAY_RANGE),
        ],
    )


class UsagePeriodForm(forms.Form):
    since = _period_day()
    until = _period_day()


@admin.register(UsageEntry)
class UsageEntryAdmin(DrillDownAdmin):
    """The usage ledger: what each reply cost, read only (it is what the quota counts)."""

    list_display = [
        "created_at", "user", "model", "provider", "prompt_tokens", "completion_tokens",
        "total_tokens", "state", "source", "message",
    ]  # fmt: skip
    list_filter = ["state", "source", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["user__email", "model", "provider"]
    list_select_related = ["user", "message"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user", "conversation", "message"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
