"""A hand-written SVG chart of one run (no plotting dependency): four panels of horizontal
bars, one bar group per route. Every panel uses a log scale: the direct floor, nginx, the
Python proxies and LiteLLM differ by 10-1000x, and a linear axis would hide the small bars."""

from __future__ import annotations

import math
from html import escape

ROW_H, LABEL_W, BAR_W, PANEL_W, TOP = 24, 130, 290, 470, 46
COLORS = {"p50": "#4878a8", "p99": "#e49444", "rps": "#5b9a5b"}


def _ticks_log(lo: float, hi: float) -> list[float]:
    return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            if lo <= 10.0 ** e <= hi]


def _ticks_lin(hi: float) -> list[float]:
    step = 10 ** math.floor(math.log10(hi)) if hi > 0 else 1
    if hi / step < 3:
        step /= 2
    return [i * step for i in range(0, int(hi / step) + 1)]


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if v >= 0.01 else f"{v:.3f}"


def panel(x0: float, y0: float, title: str, unit: str, labels: list[str], series: list[tuple[str, list]],
          log: bool) -> list[str]:
    """One panel: for each label, one bar per series (name, values)."""
    vals = [v for _, vs in series for v in vs if v is not None and v > 0]
    out = [f'<text x="{x0}" y="{y0 + 16}" class="t">{escape(title)} ({unit})</text>']
    if not vals:
        return out + [f'<text x="{x0}" y="{y0 + 40}" class="l">no data</text>']
    if log:
        lo, hi = min(vals) / 1.5, max(vals) * 1.3
        ticks = _ticks_log(lo, hi)

        def pos(v: float) -> float:
            return (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * BAR_W
    else:
        lo, hi = 0.0, max(vals) * 1.15
        ticks = _ticks_lin(hi)

        def pos(v: float) -> float:
            return v / hi * BAR_W
    gx, gy = x0 + LABEL_W, y0 + TOP
    height = len(labels) * ROW_H
    for t in ticks:
        x = gx + pos(t)
        out.append(f'<line x1="{x:.1f}" y1="{gy - 4}" x2="{x:.1f}" y2="{gy + height}" class="g"/>')
        out.append(f'<text x="{x:.1f}" y="{gy - 8}" class="k">{_num(t)}</text>')
    bar_h = (ROW_H - 6) / len(series)
    for i, label in enumerate(labels):
        y = gy + i * ROW_H
        out.append(f'<text x="{gx - 6}" y="{y + ROW_H / 2 + 4:.1f}" class="l" text-anchor="end">{escape(label)}</text>')
        for j, (name, vs) in enumerate(series):
            v = vs[i]
            if v is None or v <= 0:
                continue
            w = max(1.0, pos(v))
            by = y + 3 + j * bar_h
            out.append(f'<rect x="{gx}" y="{by:.1f}" width="{w:.1f}" height="{bar_h - 1:.1f}" fill="{COLORS[name]}">'
                       f'<title>{escape(label)} {name}: {_num(v)} {unit}</title></rect>')
            out.append(f'<text x="{gx + w + 3:.1f}" y="{by + bar_h - 2:.1f}" class="v">{_num(v)}</text>')
    return out


def svg(rows: dict, subtitle: str) -> str:
    labels = list(rows)

    def col(k):
        return [rows[n].get(k) for n in labels]

    panel_h = TOP + len(labels) * ROW_H + 24
    parts = []
    parts += panel(10, 40, "Latency, 1 connection", "ms, log", labels,
                   [("p50", col("c1_p50")), ("p99", col("c1_p99"))], True)
    parts += panel(10 + PANEL_W, 40, "Latency, 32 connections", "ms, log", labels,
                   [("p50", col("c32_p50")), ("p99", col("c32_p99"))], True)
    parts += panel(10, 40 + panel_h, "Throughput at saturation, one worker", "req/s, log", labels,
                   [("rps", col("sat_rps"))], True)
    parts += panel(10 + PANEL_W, 40 + panel_h, "Per-event delay, 200 streams x 50 ev/s", "ms, log", labels,
                   [("p50", col("ev_p50")), ("p99", col("ev_p99"))], True)
    w, h = 20 + 2 * PANEL_W, 60 + 2 * panel_h
    legend = "".join(f'<rect x="{560 + i * 90}" y="14" width="12" height="12" fill="{c}"/>'
                     f'<text x="{576 + i * 90}" y="24" class="l">{n}</text>' for i, (n, c) in enumerate(COLORS.items()))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif">\n<style>.t{{font-size:13px;font-weight:bold}} .l{{font-size:11px}} '
            f'.k{{font-size:9px;fill:#666;text-anchor:middle}} .v{{font-size:9px;fill:#333}} '
            f'.g{{stroke:#ddd;stroke-width:1}}</style>\n<rect width="{w}" height="{h}" fill="white"/>\n'
            f'<text x="10" y="24" class="t">rawproxy benchmark: {escape(subtitle)}</text>{legend}\n'
            + "\n".join(parts) + "\n</svg>\n")
