"""The HTML of a memray deck: a capture's numbers, its top allocation sites and the embedded report."""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from html import escape

__all__ = [
    "KIND_NAMES",
    "attribute_value",
    "error_report_html",
    "format_bytes",
    "memray_deck_html",
    "summary_report_html",
]

_STYLE = (
    "font-family:system-ui,sans-serif;font-size:14px;line-height:1.5;"
    "border:1px solid #ddd;border-radius:6px;padding:12px 16px"
)


_FRAME_HEIGHT = 480
# The report's own page decides the frame's height (a srcdoc frame is same-origin): measured from its
# body, and again whenever that changes, so a report in a tab that was hidden when it loaded (as in
# flytekit's deck page) still fits once shown, and a short report leaves no blank band. The count
# bounds a page whose body follows the frame's height.
_FIT_TO_CONTENT = (
    "try{var f=this,w=f.contentWindow,b=w.document.body,n=0;"
    "var fit=function(){var s=w.getComputedStyle(b),"
    "h=Math.ceil(b.getBoundingClientRect().height+parseFloat(s.marginTop)+parseFloat(s.marginBottom));"
    "if(h>0&&Math.abs(h-f.clientHeight)>1&&n++<50){f.style.height=Math.max(120,h)+'px'}};"
    "fit();new w.ResizeObserver(fit).observe(b)}catch(e){}"
)
KIND_NAMES = {"temporal_flamegraph": "temporal flame graph", "flamegraph": "flame graph", "table": "table"}
"""How decks and notes name each kind of report."""


def format_bytes(size: float) -> str:
    """``52428800`` -> ``"50.0 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns


# ---------------------------------------------------------------------------------------- HTML
_MARK_ERRORS = "flyte_ctx_tracking.mark_above_latin1"
_MARK = re.compile(rb"\x00(\d+)\x00")


def _mark_above_latin1(error: UnicodeError) -> tuple[str, int]:
    """Encoding error handler: a character above U+00FF becomes ``NUL <code point> NUL``."""
    assert isinstance(error, UnicodeEncodeError)
    return "".join(f"\x00{ord(char)}\x00" for char in error.object[error.start : error.end]), error.end


codecs.register_error(_MARK_ERRORS, _mark_above_latin1)


def attribute_value(text: str) -> str:
    """``text`` as a double-quoted attribute value, cheaply for a multi-megabyte report.

    Only ``&`` and ``"`` need escaping in a quoted attribute. memray's reports hold an emoji, so
    the text is four bytes per character and every ``str`` pass over it is slow: the work is done
    on Latin-1 bytes instead, where the few characters above U+00FF travel as NUL-delimited marks
    and end up as character references (which the attribute decodes back). The result is a
    one-byte-per-character string, cheap to join and to write out.
    """
    if "\x00" in text:  # the marks would be ambiguous: the plain way
        return escape(text, quote=True)
    data = text.encode("latin-1", _MARK_ERRORS).replace(b"&", b"&amp;").replace(b'"', b"&quot;")
    return _MARK.sub(rb"&#\1;", data).decode("latin-1")


def _sites_table(sites: Sequence[tuple[str, int, int]]) -> str:
    if not sites:
        return "<p>No allocation was alive at the peak.</p>"
    rows = "".join(
        f"<tr><td><code>{escape(location)}</code></td><td style='text-align:right'>{escape(format_bytes(size))}</td>"
        f"<td style='text-align:right'>{count}</td></tr>"
        for location, size, count in sites
    )
    return (
        "<table style='border-collapse:collapse' cellpadding='4'>"
        "<tr><th style='text-align:left'>location</th><th>memory at peak</th><th>allocations</th></tr>"
        f"{rows}</table>"
    )


def _numbers_table(peak: int | None, total: int | None, capture: str | None) -> str:
    rows = []
    if peak is not None:
        rows.append(("peak memory", f"{format_bytes(peak)} ({peak:,} bytes)"))
    if total is not None:
        rows.append(("allocations", f"{total:,}"))
    if capture is not None:
        rows.append(("capture file", capture))
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:16px'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _notes_html(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{escape(note)}</li>" for note in notes)
    return f"<p style='color:#8a5300'><b>Report reduced:</b></p><ul style='color:#8a5300'>{items}</ul>"


def summary_report_html(
    name: str,
    peak: int | None,
    total: int | None,
    sites: Sequence[tuple[str, int, int]],
    *,
    notes: Sequence[str] = (),
) -> str:
    """A small self-contained report: the numbers and the top allocation sites at the peak."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>memray summary: {escape(name)}</title></head>"
        f"<body><div style='{_STYLE}'><h3 style='margin-top:0'>memray summary: {escape(name)}</h3>"
        f"{_numbers_table(peak, total, None)}{_notes_html(notes)}"
        f"<h4>Top allocation sites at the peak</h4>{_sites_table(sites)}</div></body></html>"
    )


def error_report_html(name: str, what: str) -> str:
    """A self-contained page saying why a report could not be rendered."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>memray: {escape(name)}</title></head>"
        f"<body><div style='{_STYLE}'><h3 style='margin-top:0'>memray: {escape(name)}</h3>"
        f"<p style='color:#b00020'><b>The memray report could not be rendered:</b> {escape(what)}</p>"
        "<p>The task itself was not affected.</p></div></body></html>"
    )


def memray_deck_html(
    *,
    name: str,
    peak: int | None,
    total: int | None,
    capture: str | None,
    sites: Sequence[tuple[str, int, int]],
    report_pieces: Sequence[str],
    report_kind: str,
    notes: Sequence[str] = (),
    failure: str | None = None,
    error_type: str | None = None,
) -> str:
    """The deck of one capture: its numbers, top sites, notes, and the report in an isolated frame.

    ``report_pieces`` is the report as pieces of a double-quoted attribute value
    (:func:`attribute_value` of each piece): a report's large, shared parts are escaped once.

    Flyte puts every deck of a task into one page; memray reports are whole documents with their
    own scripts and element ids, so each is embedded as an ``<iframe srcdoc>`` and cannot clash
    with another report or restyle the page.
    """
    status = f"the section raised {error_type}" if error_type else "finished"
    parts = [
        f"<div style='{_STYLE}'>",
        f"<h3 style='margin-top:0'>Memray: {escape(name)} ({escape(status)})</h3>",
        _numbers_table(peak, total, capture),
    ]
    if failure is not None:
        parts.append(f"<p style='color:#b00020'><b>The memray report could not be rendered:</b> {escape(failure)}</p>")
    parts.append(_notes_html(notes))
    parts.append(f"<details><summary>Top allocation sites at the peak</summary>{_sites_table(sites)}</details>")
    if report_kind not in ("summary", "error"):
        parts.append(
            f"<iframe title='memray {escape(KIND_NAMES.get(report_kind, report_kind))}: {escape(name)}' "
            f"style='width:100%;height:{_FRAME_HEIGHT}px;border:1px solid #eee;margin-top:8px' "
            f'onload="{_FIT_TO_CONTENT}" srcdoc="'
        )
        parts += [*report_pieces, '"></iframe>']  # one copy of the report, in the final join
    parts.append("</div>")
    return "".join(parts)
