"""Small inline SVG charts for the compliance page: no script, no external resource.

Every label is escaped; coordinates are rounded so the same data give the same bytes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 360, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 12, 36
_PALETTE = ("#1f5fa8", "#c2571a", "#2e7d32")


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[float, float], ...]


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _frame(title: str, body: list[str]) -> str:
    return (
        f'<svg role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" aria-label="{_esc(title)}">'
        f"<title>{_esc(title)}</title>"
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
        + "".join(body)
        + "</svg>"
    )


class _Scale:
    def __init__(self, low: float, high: float, start: float, end: float) -> None:
        self.low, self.high = low, high if high > low else low + 1.0
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        return round(
            self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start), 1
        )


def _axes(x: _Scale, y: _Scale, x_label: str, y_label: str) -> list[str]:
    parts = [
        f'<line x1="{_LEFT}" y1="{HEIGHT - _BOTTOM}" x2="{WIDTH - _RIGHT}" '
        f'y2="{HEIGHT - _BOTTOM}" stroke="#333"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{HEIGHT - _BOTTOM}" stroke="#333"/>',
        f'<text x="{(WIDTH + _LEFT) // 2}" y="{HEIGHT - 4}" font-size="11" '
        f'text-anchor="middle">{_esc(x_label)}</text>',
        f'<text x="10" y="{(HEIGHT - _BOTTOM + _TOP) // 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 10 {(HEIGHT - _BOTTOM + _TOP) // 2})">{_esc(y_label)}</text>',
    ]
    for value in (x.low, (x.low + x.high) / 2, x.high):
        parts.append(
            f'<text x="{x(value)}" y="{HEIGHT - _BOTTOM + 13}" font-size="9" '
            f'text-anchor="middle">{value:.3g}</text>'
        )
    for value in (y.low, (y.low + y.high) / 2, y.high):
        parts.append(
            f'<text x="{_LEFT - 4}" y="{y(value) + 3}" font-size="9" '
            f'text-anchor="end">{value:.3g}</text>'
        )
    return parts


def reliability_diagram(bins: Sequence[tuple[float, float, int]], title: str) -> str:
    """Observed positive rate against mean predicted probability per bin; dot area ~ rows."""
    x = _Scale(0.0, 1.0, _LEFT, WIDTH - _RIGHT)
    y = _Scale(0.0, 1.0, HEIGHT - _BOTTOM, _TOP)
    body = _axes(x, y, "mean predicted probability", "observed positive rate")
    body.append(
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#999" '
        f'stroke-dasharray="4 3"/>'
    )
    total = sum(count for _, _, count in bins) or 1
    points = " ".join(f"{x(conf)},{y(acc)}" for conf, acc, _ in bins)
    if points:
        body.append(f'<polyline points="{points}" fill="none" stroke="{_PALETTE[0]}"/>')
    for conf, acc, count in bins:
        radius = round(2 + 10 * (count / total) ** 0.5, 1)
        body.append(
            f'<circle cx="{x(conf)}" cy="{y(acc)}" r="{radius}" fill="{_PALETTE[0]}" '
            f'fill-opacity="0.6"/>'
        )
    return _frame(title, body)


@dataclass(frozen=True)
class Bar:
    """One bar: its value, and optionally an interval and a reference tick (the baseline)."""

    label: str
    value: float
    interval: tuple[float, float] | None = None
    reference: float | None = None


def bar_chart(bars: Sequence[tuple[str, float] | Bar], title: str, y_label: str) -> str:
    """Vertical bars on a 0..1 scale (slice accuracies), labels under each bar; a bar's
    interval is drawn as a whisker and its reference as a black tick across it."""
    y = _Scale(0.0, 1.0, HEIGHT - _BOTTOM, _TOP)
    x = _Scale(0.0, 1.0, _LEFT, WIDTH - _RIGHT)
    body = _axes(x, y, "", y_label)[:4]
    for value in (0.0, 0.5, 1.0):
        body.append(
            f'<text x="{_LEFT - 4}" y="{y(value) + 3}" font-size="9" '
            f'text-anchor="end">{value:.3g}</text>'
        )
    slot = (WIDTH - _LEFT - _RIGHT) / max(len(bars), 1)
    for index, item in enumerate(bars):
        bar = item if isinstance(item, Bar) else Bar(*item)
        label, value = bar.label, bar.value
        left = round(_LEFT + index * slot + slot * 0.15, 1)
        middle = round(left + slot * 0.35, 1)
        top = y(max(0.0, min(1.0, value)))
        body.append(
            f'<rect x="{left}" y="{top}" width="{round(slot * 0.7, 1)}" '
            f'height="{round(HEIGHT - _BOTTOM - top, 1)}" fill="{_PALETTE[index % 3]}"/>'
            f'<text x="{round(left + slot * 0.35, 1)}" y="{HEIGHT - _BOTTOM + 13}" font-size="9" '
            f'text-anchor="middle">{_esc(label[:14])}</text>'
            f'<text x="{round(left + slot * 0.35, 1)}" y="{round(top - 3, 1)}" font-size="9" '
            f'text-anchor="middle">{value:.3f}</text>'
        )
        if bar.interval is not None:
            low, high = (y(max(0.0, min(1.0, v))) for v in bar.interval)
            body.append(
                f'<line x1="{middle}" y1="{low}" x2="{middle}" y2="{high}" stroke="#000" '
                f'stroke-width="1"/>'
            )
        if bar.reference is not None:
            tick = y(max(0.0, min(1.0, bar.reference)))
            body.append(
                f'<line x1="{left}" y1="{tick}" x2="{round(left + slot * 0.7, 1)}" y2="{tick}" '
                f'stroke="#000" stroke-width="2" stroke-dasharray="3 2"/>'
            )
    return _frame(title, body)


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    mark_x: float | None = None,
    mark_label: str = "",
) -> str:
    """Lines sharing one y axis, with a legend; ``mark_x`` draws a labelled vertical line
    (the released epoch). Quantities of different units go in separate charts."""
    xs = [px for s in series for px, _ in s.points]
    ys = [py for s in series for _, py in s.points]
    if not xs:
        return _frame(title, [f'<text x="20" y="40" font-size="12">{_esc("no data")}</text>'])
    x = _Scale(min(xs), max(xs), _LEFT, WIDTH - _RIGHT)
    y = _Scale(min(0.0, min(ys)), max(ys), HEIGHT - _BOTTOM, _TOP)
    body = _axes(x, y, x_label, y_label)
    for index, line in enumerate(series):
        colour = _PALETTE[index % len(_PALETTE)]
        points = " ".join(f"{x(px)},{y(py)}" for px, py in line.points)
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        body.append(
            f'<text x="{WIDTH - _RIGHT - 4}" y="{_TOP + 12 + 12 * index}" font-size="10" '
            f'text-anchor="end" fill="{colour}">{_esc(line.name)}</text>'
        )
    if mark_x is not None and x.low <= mark_x <= x.high:
        body.append(
            f'<line x1="{x(mark_x)}" y1="{_TOP}" x2="{x(mark_x)}" y2="{HEIGHT - _BOTTOM}" '
            f'stroke="#000" stroke-dasharray="4 3"/>'
            f'<text x="{x(mark_x) + 3}" y="{HEIGHT - _BOTTOM - 4}" font-size="10">'
            f"{_esc(mark_label)}</text>"
        )
    return _frame(title, body)
