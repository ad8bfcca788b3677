"""Server-side SVG line charts (the loss curve): no script, no library, one circle per point.

Markup is built with ``Markup.format``, which escapes every value it is given, so nothing a user wrote can become
markup here. Points carry ``data-series`` and ``data-x`` so tests (and people reading the source) can count them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

WIDTH, HEIGHT = 720, 300
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 28, 36


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # a class from ui.css: the colour lives in the stylesheet, not in the markup
    points: Sequence[tuple[float, float]]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def line_chart(series: Sequence[Series], *, x_label: str, y_label: str, title: str) -> Markup:
    """An SVG chart of ``series``; a short message instead when no series has a point."""
    finite = [(s, [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]) for s in series]
    all_points = [p for _, pts in finite for p in pts]
    if not all_points:
        return Markup('<p class="empty chart-empty">No {} logged yet.</p>').format(y_label)
    xs = [x for x, _ in all_points]
    ys = [y for _, y in all_points]
    y_ticks = nice_ticks(min(0.0, min(ys)), max(ys))
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    x_ticks = [t for t in nice_ticks(x_low, x_high, 6) if x_low <= t <= x_high] or [x_low]
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def sx(x: float) -> float:
        return PAD_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return PAD_TOP + (1 - (y - y_low) / ((y_high - y_low) or 1)) * plot_h

    out = [
        Markup(
            '<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
            'aria-label="{title}"><title>{title}</title>'
        ).format(w=WIDTH, h=HEIGHT, title=title)
    ]
    for t in y_ticks:
        y = sy(t)
        out.append(
            Markup(
                '<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1f}" y2="{y:.1f}"/>'
                '<text class="tick" x="{tx}" y="{ty:.1f}" text-anchor="end">{label}</text>'
            ).format(x1=PAD_LEFT, x2=WIDTH - PAD_RIGHT, y=y, tx=PAD_LEFT - 6, ty=y + 4, label=_fmt(t))
        )
    for t in x_ticks:
        x = sx(t)
        out.append(
            Markup(
                '<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{y1}" y2="{y2}"/>'
                '<text class="tick" x="{x:.1f}" y="{ty}" text-anchor="middle">{label}</text>'
            ).format(x=x, y1=PAD_TOP, y2=HEIGHT - PAD_BOTTOM, ty=HEIGHT - PAD_BOTTOM + 16, label=_fmt(t))
        )
    out.append(
        Markup(
            '<text class="axis-label" x="{x}" y="{y}" text-anchor="middle">{label}</text>'
            '<text class="axis-label" x="12" y="{my}" text-anchor="middle" transform="rotate(-90 12 {my})">{yl}</text>'
        ).format(x=PAD_LEFT + plot_w / 2, y=HEIGHT - 4, label=x_label, my=PAD_TOP + plot_h / 2, yl=y_label)
    )
    legend_x = PAD_LEFT
    for s, pts in finite:
        if not pts:
            continue
        pts = sorted(pts)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(Markup('<g class="series {css}" data-series="{name}">').format(css=s.css, name=s.name))
        out.append(Markup('<polyline class="line" points="{}"/>').format(path))
        for x, y in pts:
            out.append(
                Markup(
                    '<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" data-x="{x}" data-y="{y}">'
                    "<title>{name} at {xl} {xv}: {yv}</title></circle>"
                ).format(
                    cx=sx(x), cy=sy(y), x=_fmt(x), y=repr(float(y)), name=s.name, xl=x_label, xv=_fmt(x), yv=_fmt(y)
                )
            )
        out.append(Markup("</g>"))
        out.append(
            Markup(
                '<g class="legend {css}"><rect x="{x}" y="8" width="12" height="12"/>'
                '<text x="{tx}" y="18">{name}</text></g>'
            ).format(css=s.css, x=legend_x, tx=legend_x + 16, name=s.name)
        )
        legend_x += 24 + 8 * len(s.name) + 16
    out.append(Markup("</svg>"))
    return Markup("").join(out)


def loss_curve(points: Sequence[dict[str, object]]) -> Markup:
    """Train and validation loss per logged step, from a job's metrics points (``service.jobs.metrics``)."""

    def series(column: str) -> list[tuple[float, float]]:
        out = []
        for p in points:
            step, value = p.get("step"), p.get(column)
            if isinstance(step, int) and isinstance(value, int | float) and not isinstance(value, bool):
                out.append((float(step), float(value)))
        return out

    return line_chart(
        [Series("train loss", "train", series("train_loss")), Series("validation loss", "valid", series("valid_loss"))],
        x_label="step",
        y_label="loss",
        title="Loss per step",
    )
