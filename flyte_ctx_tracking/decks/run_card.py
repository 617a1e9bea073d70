"""The deck a tracking session shows: what its run is, what it logged, and where to find it.

HTML only: functions from :class:`RunInfo` to markup. Everything is escaped; charts are inline
SVG (no script, nothing fetched), drawn from at most ``_CHART_POINTS`` points per series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from .._types import RunInfo

_STYLE = (
    "font-family:system-ui,sans-serif;font-size:14px;line-height:1.5;"
    "border:1px solid #ddd;border-radius:6px;padding:12px 16px;max-width:900px"
)


# Upload commands name long paths: wrapped inside the card instead of running out of it.
_COMMAND_STYLE = "white-space:pre-wrap;word-break:break-all;background:#f6f8fa;padding:8px;border-radius:4px"
_TH = "text-align:left;padding-right:16px;vertical-align:top"
_CELL = "padding:2px 12px 2px 0;vertical-align:middle;font-variant-numeric:tabular-nums"

_CHART_WIDTH, _CHART_HEIGHT, _CHART_PAD = 240, 48, 3
_CHART_POINTS = 200
"""At most this many points per chart: long histories are reduced to each bucket's min and max."""
_MAX_CHARTS = 60
"""Series beyond this many are listed with their numbers, without a chart (the card stays small)."""
_MAX_CONFIG = 200
_MAX_VALUE = 300


def _number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def downsample(points: Sequence[tuple[float, float]], limit: int = _CHART_POINTS) -> list[tuple[float, float]]:
    """At most ``limit`` of ``points`` (finite ones only), keeping each bucket's lowest and highest
    value in order, so spikes stay visible."""
    finite = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(finite) <= limit:
        return finite
    buckets = max(1, limit // 2)
    size = len(finite) / buckets
    kept: list[tuple[float, float]] = []
    for index in range(buckets):
        bucket = finite[int(index * size) : int((index + 1) * size)]
        if not bucket:
            continue
        low = min(range(len(bucket)), key=lambda i: bucket[i][1])
        high = max(range(len(bucket)), key=lambda i: bucket[i][1])
        kept.extend(bucket[i] for i in sorted({low, high}))
    if kept[-1] != finite[-1]:
        kept.append(finite[-1])
    return kept


def chart_svg(name: str, points: Sequence[tuple[float, float]]) -> str:
    """A small line chart of ``points`` as inline SVG (empty text when nothing finite to draw)."""
    shown = downsample(points)
    if not shown:
        return ""
    xs = [x for x, _ in shown]
    ys = [y for _, y in shown]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    width, height, pad = _CHART_WIDTH, _CHART_HEIGHT, _CHART_PAD

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad) if x1 > x0 else width / 2

    def py(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad) if y1 > y0 else height / 2

    coordinates = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in shown)
    mark = (
        f"<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='{coordinates}'/>"
        if len(shown) > 1
        else f"<circle cx='{px(xs[0]):.1f}' cy='{py(ys[0]):.1f}' r='2' fill='#1f77b4'/>"
    )
    label = escape(f"{name}: {len(points)} values", quote=True)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{label}' "
        f"style='background:#fafbfc;border:1px solid #eee'><title>{label}</title>{mark}</svg>"
    )


def series_html(series: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """A table of the logged series: name, chart, last, min and max."""
    if not series:
        return ""
    rows = []
    for index, (name, points) in enumerate(series.items()):
        values = [y for _, y in points]
        finite = [y for y in values if math.isfinite(y)]
        last = _number(values[-1]) if values else ""
        low = _number(min(finite)) if finite else ""
        high = _number(max(finite)) if finite else ""
        chart = chart_svg(name, points) if index < _MAX_CHARTS else ""
        rows.append(
            f"<tr><th style='{_TH}'>{escape(name)}</th><td style='{_CELL}'>{chart}</td>"
            f"<td style='{_CELL}'>{last}</td><td style='{_CELL}'>{low}</td><td style='{_CELL}'>{high}</td></tr>"
        )
    header = (
        f"<tr><th style='{_TH}'>metric</th><th style='{_TH}'></th><th style='{_TH}'>last</th>"
        f"<th style='{_TH}'>min</th><th style='{_TH}'>max</th></tr>"
    )
    return f"<h4>Logged values</h4><table>{header}{''.join(rows)}</table>"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def run_card_html(info: RunInfo) -> str:
    """Self-contained HTML describing one run: its status and fields, what it logged (charts, config,
    tags), its link when online, else its local path and the command that uploads it."""
    rows = "".join(
        f"<tr><th style='{_TH}'>{escape(name)}</th><td>{escape(str(value))}</td></tr>"
        for name, value in info.fields.items()
        if value is not None
    )
    status = "failed" if info.failed else "finished"
    parts = [f"<div style='{_STYLE}'>", f"<h3 style='margin-top:0'>{escape(info.backend)} run ({status})</h3>"]
    if info.status:
        parts.append(f"<p>Status: <strong>{escape(info.status)}</strong></p>")
    if info.sharing:
        parts.append(f"<p data-sharing><strong>{escape(info.sharing)}</strong></p>")
    parts.append(f"<table>{rows}</table>")
    if info.tags:
        tags = ", ".join(f"<code>{escape(str(tag))}</code>" for tag in info.tags)
        parts.append(f"<p>Tags: {tags}</p>")
    parts.append(series_html(info.series))
    if info.note:
        parts.append(f"<p><em>{escape(info.note)}</em></p>")
    if info.config:
        items = list(info.config.items())
        config_rows = "".join(
            f"<tr><th style='{_TH}'>{escape(str(key))}</th><td>{escape(_short(str(value)))}</td></tr>"
            for key, value in items[:_MAX_CONFIG]
        )
        more = f"<p>… and {len(items) - _MAX_CONFIG} more</p>" if len(items) > _MAX_CONFIG else ""
        parts.append(f"<h4>Config</h4><table>{config_rows}</table>{more}")
    if info.url:
        parts.append(f"<p><a href='{escape(info.url, quote=True)}' target='_blank'>Open the run</a></p>")
    if info.local_path:
        parts.append(f"<p>Recorded offline in <code>{escape(info.local_path)}</code></p>")
    if info.sync_command:
        parts.append(f"<p>Upload it with:</p><pre style='{_COMMAND_STYLE}'>{escape(info.sync_command)}</pre>")
    if info.copied_to:
        parts.append(f"<p>Copied to <code>{escape(info.copied_to)}</code> when it closed; upload from there with:</p>")
        command = f"flyte-ctx-tracking sync {info.copied_to.split('/flyte-ctx-tracking/')[0]}"
        parts.append(f"<pre style='{_COMMAND_STYLE}'>{escape(command)}</pre>")
    parts.append("</div>")
    return "".join(parts)
