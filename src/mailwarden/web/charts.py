"""Charts drawn on the server: the geometry of SVG bar and column charts, which templates/charts.html draws.

No script and nothing from elsewhere: a chart is an inline SVG whose rectangles carry a CSS class
(the status colours of style.css) and a <title> (the browser shows it as a tooltip). Labels and
titles are plain strings here; the template escapes them like every other value, since reason
codes and statuses come from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ROW: Final = 22  # a bar's row height
LABEL: Final = 190  # the width of the labels' column of a bar chart
BAR_SPACE: Final = 240  # the longest bar
COLUMN: Final = 18  # a day's column, with its gap
PLOT_HEIGHT: Final = 150
AXIS: Final = 44  # left of the columns: the scale's labels
FOOT: Final = 22  # below the columns: the days' labels


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    css: str
    y: int
    length: float
    title: str
    href: str


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one per label, longest first."""

    bars: list[Bar]
    width: int
    height: int
    label_width: int = LABEL


@dataclass(frozen=True)
class Segment:
    y: float
    height: float
    css: str
    title: str
    href: str


@dataclass(frozen=True)
class Column:
    x: int
    label: str  # the day under every fifth column, else ""
    total: int
    segments: list[Segment]


@dataclass(frozen=True)
class ColumnChart:
    """One column per day, stacked by part (status), with a scale of round numbers."""

    columns: list[Column]
    ticks: list[tuple[float, str]]  # (y, label) of the scale
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    axis: int = AXIS
    column_width: int = COLUMN - 4


@dataclass(frozen=True)
class Item:
    """What a bar or a column's part shows: its value, CSS class, tooltip and where a click leads."""

    label: str
    value: int
    css: str
    title: str
    href: str


def bars(items: list[Item]) -> BarChart:
    """A bar for each item, in their order."""
    top = max((item.value for item in items), default=0)
    drawn = [
        Bar(
            item.label,
            item.value,
            item.css,
            n * ROW,
            (BAR_SPACE * item.value / top) if top else 0.0,
            item.title,
            item.href,
        )
        for n, item in enumerate(items)
    ]
    return BarChart(drawn, LABEL + BAR_SPACE + 70, max(1, len(drawn)) * ROW)


def nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def columns(days: list[tuple[str, list[Item]]]) -> ColumnChart:
    """For each day (its label and its parts), a column of the parts stacked from the bottom."""
    top = nice_top(max((sum(part.value for part in parts) for _, parts in days), default=0))
    plot_top = 8
    plot_bottom = plot_top + PLOT_HEIGHT
    scale = PLOT_HEIGHT / top
    drawn = []
    for n, (label, parts) in enumerate(days):
        bottom = float(plot_bottom)
        segments = []
        for part in parts:
            if part.value <= 0:
                continue
            height = part.value * scale
            bottom -= height
            segments.append(Segment(bottom, height, part.css, part.title, part.href))
        shown = label if n % 5 == 0 or n == len(days) - 1 else ""
        drawn.append(Column(AXIS + n * COLUMN, shown, sum(part.value for part in parts), segments))
    marks = [0, top // 2, top] if top % 2 == 0 else [0, top]
    ticks = [(plot_bottom - value * scale, f"{value:,}") for value in marks]
    return ColumnChart(drawn, ticks, AXIS + len(days) * COLUMN + 8, plot_bottom + FOOT, plot_top, plot_bottom)
