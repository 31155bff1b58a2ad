"""Templates (autoescaped Jinja2), their filters, and the server-drawn bar chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from board.graph import STATUS_COLOURS, step_href, task_href

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
FOLD_CHARS = 1500  # longer transcript parts and outputs are folded


def when(value: datetime | None) -> str:
    return "" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def ago(value: datetime | None) -> str:
    if value is None:
        return ""
    s = (datetime.now(UTC) - value).total_seconds()
    if s < 0:
        return "in " + duration(-s)
    return duration(s) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def money(value: float | Decimal | None) -> str:
    v = float(value or 0)
    return f"${v:.4f}" if v < 1 else f"${v:,.2f}"


def tokens(value: float | int | None) -> str:
    return f"{int(value or 0):,}"


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def folded(text: Any, limit: int = FOLD_CHARS) -> Markup:
    """Return `text` escaped in a <pre>, folded behind its first lines when long."""
    body = pretty(text)
    if len(body) <= limit:
        return Markup(f"<pre>{escape(body)}</pre>")
    head = escape(body[:300])
    return Markup(f"<details><summary><pre class=head>{head}…</pre>"
                  f"<span class=muted>{len(body):,} characters, click to unfold</span></summary>"
                  f"<pre>{escape(body)}</pre></details>")


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(["html"], default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, ago=ago, duration=duration, money=money, tokens=tokens,
                       pretty=pretty, folded=folded, q=lambda v: quote(str(v), safe=""))
    env.globals.update(step_href=step_href, task_href=task_href, colours=STATUS_COLOURS)
    # Macros as a global, so a page's live block renders on its own (live refresh).
    env.globals["m"] = env.get_template("_macros.html").module
    return env


def bar_chart(points: Sequence[tuple[str, float]], *, width: int = 720, height: int = 200,
              unit: str = "", fmt: str = "{:.4f}") -> Markup:
    """Return an inline SVG bar chart of (label, value) pairs, labels escaped."""
    n = max(len(points), 1)
    top = max((v for _, v in points), default=0.0) or 1.0
    left, bottom, gap = 56, 36, 2
    plot_w, plot_h = width - left - 8, height - bottom - 12
    bar_w = max(plot_w / n - gap, 1)
    out = [f'<svg class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    for frac in (0, 0.5, 1):
        y = 12 + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#e2e8f0"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
                   f'{escape(unit + fmt.format(top * frac))}</text>')
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = left + i * (bar_w + gap)
        out.append(f'<rect x="{x:.1f}" y="{12 + plot_h - h:.1f}" width="{bar_w:.1f}" '
                   f'height="{h:.1f}" fill="#0ea5e9"><title>{escape(label)}: '
                   f'{escape(unit + fmt.format(value))}</title></rect>')
        if n <= 12 or i % max(n // 8, 1) == 0:
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 20}" font-size="9" '
                       f'text-anchor="middle">{escape(label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def climbs_at(opened: datetime, level: int, chain_len: int, timeout_s: float) -> datetime | None:
    """When an unanswered escalation moves up next (None at the top: it waits for a person)."""
    if level >= chain_len - 1:
        return None
    return opened + timedelta(seconds=timeout_s * (level + 1))
