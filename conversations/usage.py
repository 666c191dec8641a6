"""Token usage: what replies cost, added up by the database from the usage ledger.

Each reply has one `UsageEntry` (replies/quota.py writes and settles them), kept when its
conversation is deleted. The sums are one grouped query, whatever the number of replies. A
reply still being written counts as a reply; its tokens count once it is settled (the quota
also counts what it has reserved meanwhile). "A day" is a calendar day in TIME_ZONE.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Count, Q, QuerySet, Sum, TextField, Value
from django.db.models.functions import Coalesce, NullIf, TruncDate
from django.utils import timezone

from conversations.models import UsageEntry

USAGE_DAYS = 30
UNKNOWN_MODEL = "unknown model"
SETTLED = Q(state=UsageEntry.State.SETTLED)


def _token_sum(name: str, condition: Q = SETTLED) -> Coalesce:
    return Coalesce(Sum(name, filter=condition), 0)


def _totals() -> dict:
    return {
        "prompt_tokens": _token_sum("prompt_tokens"),
        "completion_tokens": _token_sum("completion_tokens"),
        "total_tokens": _token_sum("total_tokens"),
        "replies": Count("pk"),
    }


@dataclass
class Totals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    replies: int = 0

    def add(self, other: "Totals") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.replies += other.replies

    @classmethod
    def of(cls, row: dict) -> "Totals":
        return cls(
            row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["replies"]
        )


def start_of_day(day: date) -> datetime:
    """Midnight at the start of `day` in TIME_ZONE."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def today() -> date:
    return timezone.localdate(timezone=timezone.get_default_timezone())


def entries_between(start: datetime | None, end: datetime | None) -> QuerySet[UsageEntry]:
    """Every reply the model was asked for in [start, end) (None: no bound), earlier versions
    and deleted conversations included: they cost tokens too."""
    entries = UsageEntry.objects.all()
    if start is not None:
        entries = entries.filter(created_at__gte=start)
    if end is not None:
        entries = entries.filter(created_at__lt=end)
    return entries


def _model_name() -> Coalesce:
    return Coalesce(NullIf("model", Value("")), Value(UNKNOWN_MODEL), output_field=TextField())


def tokens_on(user_id: int, day: date) -> tuple[int, int]:
    """The user's tokens on `day`: spent by settled replies, and reserved by replies still
    being written. One query."""
    of_day = entries_between(start_of_day(day), start_of_day(day + timedelta(days=1)))
    sums = of_day.filter(user_id=user_id).aggregate(
        spent=_token_sum("total_tokens"),
        reserved=_token_sum("total_tokens", ~SETTLED),
    )
    return sums["spent"], sums["reserved"]


@dataclass
class UsageReport:
    """A user's tokens per day and per model over the last `len(days)` days, oldest first."""

    days: list[date]
    models: list[str] = field(default_factory=list)  # most used first
    cells: dict[tuple[date, str], Totals] = field(default_factory=dict)
    by_day: dict[date, Totals] = field(default_factory=dict)
    by_model: dict[str, Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)

    @property
    def today(self) -> Totals:
        return self.by_day[self.days[-1]]


def usage_report(user_id: int, days: int = USAGE_DAYS) -> UsageReport:
    """The user's own usage, in one grouped query."""
    last = today()
    report = UsageReport(days=[last - timedelta(days=n) for n in range(days - 1, -1, -1)])
    rows = (
        entries_between(start_of_day(report.days[0]), start_of_day(last + timedelta(days=1)))
        .filter(user_id=user_id)
        .annotate(
            day=TruncDate("created_at", tzinfo=timezone.get_default_timezone()),
            model_name=_model_name(),
        )
        .values("day", "model_name")
        .annotate(**_totals())
        .order_by("day", "model_name")
    )
    report.by_day = {day: Totals() for day in report.days}
    for row in rows:
        totals = Totals.of(row)
        report.cells[row["day"], row["model_name"]] = totals
        report.by_day[row["day"]].add(totals)
        report.by_model.setdefault(row["model_name"], Totals()).add(totals)
        report.total.add(totals)
    report.models = sorted(report.by_model, key=lambda m: (-report.by_model[m].total_tokens, m))
    return report


def totals_by_user(start: datetime | None, end: datetime | None) -> list[dict]:
    """Every user's replies and tokens in [start, end), biggest spender first."""
    return list(
        entries_between(start, end)
        .values("user_id", "user__email")
        .annotate(**_totals())
        .order_by("-total_tokens", "user__email")
    )


def totals_by_model(start: datetime | None, end: datetime | None) -> list[dict]:
    """Every model's replies and tokens in [start, end), most used first."""
    return list(
        entries_between(start, end)
        .annotate(model_name=_model_name())
        .values("model_name")
        .annotate(**_totals())
        .order_by("-total_tokens", "model_name")
    )
