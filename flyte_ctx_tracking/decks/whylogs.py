"""HTML for the whylogs decks: profile summary, drift and constraints.

Everything here is plain, self-contained HTML built from plain data (no whylogs import): it renders
in a Flyte console without internet access. whylogs' own interactive reports load jQuery,
Handlebars, D3, Bootstrap and Google Fonts from public CDNs and draw themselves in the browser, so
in a closed network they stay blank; when given, they are appended below, folded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the data comes from the whylogs integration; nothing is imported at run time
    from ..sessions.whylogs._types import ColumnSummary, ConstraintResult, DriftResult

__all__ = [
    "constraints_html",
    "drift_html",
    "profile_summary_html",
]

_STYLE = (
    "<style>"
    ".fct-wl{font-family:system-ui,sans-serif;font-size:14px;line-height:1.45;max-width:1100px}"
    ".fct-wl table{border-collapse:collapse;margin:8px 0}"
    ".fct-wl th,.fct-wl td{border-bottom:1px solid #e3e3e3;padding:4px 10px;text-align:left}"
    ".fct-wl td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".fct-wl .ok{color:#17692f;font-weight:600}.fct-wl .bad{color:#b3261e;font-weight:600}"
    ".fct-wl .warn{color:#8a5a00;font-weight:600}.fct-wl .muted{color:#666}"
    "</style>"
)
_CDN_NOTE = (
    "whylogs' interactive report: it loads its scripts and fonts from public CDNs, so it is loaded only when you "
    "ask, and needs internet access (the tables above are complete on their own)"
)


def _number(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:.6g}"


def _estimate(value: float | None) -> str:
    """A sketch's estimate of a count, as people read one: ``~99,403`` (not ``99402.8``)."""
    if value is None or math.isnan(value):
        return ""
    return f"~{round(value):,}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _header(title: str, lines: Sequence[str]) -> str:
    body = "".join(f"<p style='margin:2px 0'>{line}</p>" for line in lines)
    return f"{_STYLE}<div class='fct-wl'><h3 style='margin-top:0'>{escape(title)}</h3>{body}"


# whylogs' report sits in a <template>, which a browser keeps inert (no script runs, no frame loads,
# nothing is requested) until the button copies it into the page.
_LOAD_ON_DEMAND = "this.parentNode.appendChild(this.nextElementSibling.content.cloneNode(true));this.remove()"


def _footer(interactive_html: str | None) -> str:
    if not interactive_html:
        return "</div>"
    return (
        f"<details><summary class='muted'>{escape(_CDN_NOTE)}</summary>"
        f'<button type="button" onclick="{_LOAD_ON_DEMAND}">'
        "Load the interactive report (needs internet access)</button>"
        f"<template>{interactive_html}</template></details></div>"
    )


def profile_summary_html(
    name: str,
    columns: Sequence[ColumnSummary],
    *,
    rows: int | None = None,
    chunks: int | None = None,
    error: BaseException | None = None,
    interactive_html: str | None = None,
) -> str:
    """The profile summary deck: the profile's name, then one row per column."""
    lines = []
    if rows is not None:
        logged = _plural(rows, "row") + " logged" + (f" in {_plural(chunks, 'chunk')}" if chunks is not None else "")
        lines.append(f"{escape(logged)}, {_plural(len(columns), 'column')}.")
    else:
        lines.append(f"{_plural(len(columns), 'column')}.")
    if error is not None:
        lines.append(
            f"<span class='bad'>The block raised {escape(type(error).__name__)}</span>: "
            "this profile holds what was logged before it."
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("column", "type", "count", "nulls", "mean", "min", "max", "distinct (estimate)")
    )
    body = "".join(
        "<tr>"
        f"<td>{escape(c.column)}</td><td>{escape(c.type)}</td>"
        f"<td class='n'>{_number(c.count)}</td><td class='n'>{_number(c.null_count)}</td>"
        f"<td class='n'>{_number(c.mean)}</td><td class='n'>{_number(c.min)}</td><td class='n'>{_number(c.max)}</td>"
        f"<td class='n'>{_estimate(c.cardinality)}</td>"
        "</tr>"
        for c in columns
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if columns else ""
    return _header(f"whylogs profile: {name}", lines) + table + _footer(interactive_html)


_CATEGORY = {"DRIFT": ("bad", "drift"), "POSSIBLE_DRIFT": ("warn", "possible drift"), "NO_DRIFT": ("ok", "no drift")}


def drift_html(
    name: str,
    results: Sequence[DriftResult],
    *,
    only_in_reference: Sequence[str] = (),
    only_in_target: Sequence[str] = (),
    interactive_html: str | None = None,
) -> str:
    """The drift deck: one row per column shared by the reference and the target."""
    drifted = [r.column for r in results if r.category == "DRIFT"]
    lines = [
        f"{len(drifted)} of {len(results)} columns drifted"
        + (f": {escape(', '.join(drifted))}" if drifted else "")
        + " (p-value below 0.05; 0.05 to 0.15 is possible drift)."
    ]
    if only_in_reference:
        lines.append(f"Missing from what was logged: {escape(', '.join(only_in_reference))}.")
    if only_in_target:
        lines.append(f"New, not in the reference: {escape(', '.join(only_in_target))}.")
    head = "".join(f"<th>{h}</th>" for h in ("column", "drift", "test", "p-value", "statistic"))
    rows = []
    for r in results:
        css, label = _CATEGORY.get(r.category or "", ("muted", "no test"))
        rows.append(
            f"<tr><td>{escape(r.column)}</td><td class='{css}'>{label}</td><td>{escape(r.algorithm or '')}</td>"
            f"<td class='n'>{_number(r.pvalue)}</td><td class='n'>{_number(r.statistic)}</td></tr>"
        )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>" if rows else ""
    return _header(f"whylogs drift: {name}", lines) + table + _footer(interactive_html)


def constraints_html(
    name: str,
    results: Sequence[ConstraintResult],
    *,
    error: str | None = None,
    interactive_html: str | None = None,
) -> str:
    """The constraints deck: how many passed, then each constraint with PASS or FAIL."""
    failed = [r.name for r in results if not r.passed]
    lines = [f"{len(results) - len(failed)} of {len(results)} constraints passed."]
    if failed:
        lines.append(f"<span class='bad'>Failed</span>: {escape(', '.join(failed))}")
    if error is not None:
        lines.append(f"<span class='bad'>The constraints could not be evaluated</span>: {escape(error)}")
    head = "<th>constraint</th><th>result</th><th>detail</th>"
    body = "".join(
        f"<tr><td>{escape(r.name)}</td>"
        + ("<td class='ok'>PASS</td>" if r.passed else "<td class='bad'>FAIL</td>")
        + f"<td class='muted'>{escape(r.detail or '')}</td></tr>"
        for r in results
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if results else ""
    return _header(f"whylogs constraints: {name}", lines) + table + _footer(interactive_html)
