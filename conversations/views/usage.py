"""The usage page: a user's own tokens per day and model, and today's use against the quota."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from conversations import usage
from conversations.replies import quota
from conversations.views.usage_chart import chart


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    report = usage.usage_report(request.user.pk)
    daily_quota = quota.quota_for(request.user)
    spent, reserved = usage.tokens_on(request.user.pk, report.days[-1])
    used_today = spent + reserved
    context = {
        "report": report,
        "chart": chart(report),
        "rows": [
            {
                "day": day,
                "cells": [report.cells.get((day, m)) for m in report.models],
                "total": report.by_day[day],
            }
            for day in reversed(report.days)
        ],
        "models_table": [(model, report.by_model[model]) for model in report.models],
        "daily_quota": daily_quota,
        # The meter turns amber past 60 % and red past 90 % of the quota.
        "quota_low": daily_quota * 6 // 10,
        "quota_high": daily_quota * 9 // 10,
        "used_today": used_today,
        "reserved_today": reserved,
        "left_today": max(daily_quota - used_today, 0) if daily_quota else None,
        "resets_at": quota.next_reset(),
    }
    return render(request, "conversations/usage.html", context)
