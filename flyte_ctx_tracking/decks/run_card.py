"""The deck a tracking session shows: what its run is and where to find it."""

from __future__ import annotations

from html import escape

from .._types import RunInfo

_STYLE = (
    "font-family:system-ui,sans-serif;font-size:14px;line-height:1.5;"
    "border:1px solid #ddd;border-radius:6px;padding:12px 16px;max-width:900px"
)


# Upload commands name long paths: wrapped inside the card instead of running out of it.
_COMMAND_STYLE = "white-space:pre-wrap;word-break:break-all;background:#f6f8fa;padding:8px;border-radius:4px"


def run_card_html(info: RunInfo) -> str:
    """Self-contained HTML describing one run: its fields, its link when online, else its local
    path and the command that uploads it."""
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:16px'>{escape(name)}</th><td>{escape(str(value))}</td></tr>"
        for name, value in info.fields.items()
        if value is not None
    )
    status = "failed" if info.failed else "finished"
    parts = [f"<div style='{_STYLE}'>", f"<h3 style='margin-top:0'>{escape(info.backend)} run ({status})</h3>"]
    parts.append(f"<table>{rows}</table>")
    if info.url:
        parts.append(f"<p><a href='{escape(info.url, quote=True)}' target='_blank'>Open the run</a></p>")
    if info.local_path:
        parts.append(f"<p>Recorded offline in <code>{escape(info.local_path)}</code></p>")
    if info.sync_command:
        parts.append(f"<p>Upload it with:</p><pre style='{_COMMAND_STYLE}'>{escape(info.sync_command)}</pre>")
    parts.append("</div>")
    return "".join(parts)
