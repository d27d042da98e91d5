"""Trend plots of vital signs as SVG, drawn on the server: no plotting library, no script in the browser.

A plot is a line through the readings in time order, with the lowest and highest value labelled and a
``<title>`` per point (a tooltip, and text for screen readers).  Colours come from the stylesheet
(``web/static/chart.css``) through class names: the CSP forbids inline styles.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from web.chart.display import parse_instant

WIDTH, HEIGHT, PAD = 320, 110, 24


def trend_svg(
    label: str, points: list[tuple[str, float]], unit: str = "", second: list[tuple[str, float]] | None = None
) -> Markup:
    """An SVG line plot of ``points`` ((FHIR dateTime, value)); ``second`` draws a second line (diastolic)."""
    series = [_timed(points)] + ([_timed(second)] if second else [])
    series = [s for s in series if s]
    if not series:
        return Markup("")
    times = [t for s in series for t, _ in s]
    values = [v for s in series for _, v in s]
    t0, t1 = min(times), max(times)
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1

    def x(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)

    def y(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v - low) / (high - low)

    title = f"{label} trend, {len(points)} readings"
    parts = [
        f'<svg class="trend" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>',
        f'<text class="tick" x="2" y="{y(high) + 4:.1f}">{escape(_fmt(max(values)))}</text>',
        f'<text class="tick" x="2" y="{y(low) + 4:.1f}">{escape(_fmt(min(values)))}</text>',
    ]
    for index, s in enumerate(series):
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s)
        parts.append(f'<polyline class="line line-{index}" points="{path}"/>')
        for t, v in s:
            parts.append(
                f'<circle class="dot line-{index}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5">'
                f"<title>{escape(_fmt(v))} {escape(unit)}</title></circle>"
            )
    first, last = min(times), max(times)
    parts.append(f'<text class="tick" x="{PAD}" y="{HEIGHT - 6}">{escape(_day(first))}</text>')
    parts.append(f'<text class="tick end" x="{WIDTH - PAD}" y="{HEIGHT - 6}">{escape(_day(last))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _timed(points: list[tuple[str, float]] | None) -> list[tuple[float, float]]:
    out = []
    for moment, value in points or []:
        parsed = parse_instant(moment if "T" in moment else moment + "T00:00:00+00:00")
        if parsed is not None:
            if parsed.tzinfo is None:
                continue
            out.append((parsed.timestamp(), value))
    return sorted(out)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _day(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
