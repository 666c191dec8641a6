"""The usage page's chart: where each bar segment, tick and label of the SVG goes.

Numbers only, from a report of conversations/usage.py; templates/conversations/usage.html draws
them (and escapes every name).
"""

from conversations.usage import UsageReport

# Bars of the chart, in SVG user units; CSS scales the whole drawing to its box.
CHART_WIDTH = 720
CHART_HEIGHT = 240
CHART_LEFT = 56  # room for the tick labels
CHART_BOTTOM = 24  # room for the day labels
CHART_TOP = 8
CHART_RIGHT = 20  # room for the last day's label
SERIES_COLOURS = 8  # .series-0 … .series-7 in app.css, reused in turn beyond that


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value`: a round axis."""
    step = 1
    while True:
        for factor in (1, 2, 2.5, 5):
            if step * factor >= value:
                return int(step * factor)
        step *= 10


def chart(report: UsageReport) -> dict:
    """Where each bar segment and tick of the usage chart goes: numbers only, the template
    draws them (and escapes every name)."""
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    plot_width = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    highest = _nice_ceiling(max((t.total_tokens for t in report.by_day.values()), default=0) or 1)
    slot = plot_width / len(report.days)
    series = {model: index % SERIES_COLOURS for index, model in enumerate(report.models)}
    bars = []
    for index, day in enumerate(report.days):
        bottom = CHART_TOP + plot_height
        segments = []
        for model in report.models:
            cell = report.cells.get((day, model))
            if not cell or not cell.total_tokens:
                continue
            height = cell.total_tokens / highest * plot_height
            bottom -= height
            segments.append(
                {
                    "model": model,
                    "tokens": cell.total_tokens,
                    "series": series[model],
                    "y": round(bottom, 2),
                    "height": round(height, 2),
                }
            )
        bars.append(
            {
                "day": day,
                "x": round(CHART_LEFT + index * slot + slot * 0.15, 2),
                "label_x": round(CHART_LEFT + index * slot + slot / 2, 2),
                "labelled": index % 5 == (len(report.days) - 1) % 5,
                "segments": segments,
                "total": report.by_day[day].total_tokens,
            }
        )
    ticks = [
        {"value": highest * n // 4, "y": round(CHART_TOP + plot_height * (1 - n / 4), 2)}
        for n in range(5)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "baseline": CHART_TOP + plot_height,
        "label_y": CHART_HEIGHT - 6,
        "bar_width": round(slot * 0.7, 2),
        "bars": bars,
        "ticks": ticks,
        "legend": [{"model": model, "series": series[model]} for model in report.models],
    }
