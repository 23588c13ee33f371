"""Small SVG charts rendered in Python, so the report is one file with no script and no library.

Every function is pure: data in, an SVG string out. All text that reaches the SVG goes through
`esc`, so a backend or field name can never inject markup; callers may mark the result safe.
Missing values (None) are drawn as such ("n/a", no bar), never as zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from xml.sax.saxutils import escape

from migbench.stats import percentile

FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
MUTED = "#9a9a9a"


def esc(text: object) -> str:
    return escape(str(text), {'"': "&quot;"})


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(label)}" style="{FONT}">'
            f'<title>{esc(label)}</title>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: object, *, size: int = 11, anchor: str = "start", fill: str = "#222",
          weight: str = "normal", rotate: float | None = None) -> str:
    rot = f' transform="rotate({rotate:.0f} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}"{rot}>{esc(text)}</text>')


def score_colour(v: float | None) -> str:
    """Red (0) -> amber (0.5) -> green (1); grey for missing."""
    if v is None or math.isnan(v):
        return "#eeeeee"
    v = min(1.0, max(0.0, v))
    if v < 0.5:
        r, g = 215, int(60 + (190 - 60) * v / 0.5)
    else:
        r, g = int(215 - (215 - 40) * (v - 0.5) / 0.5), int(190 - (190 - 150) * (v - 0.5) / 0.5)
    return f"#{r:02x}{g:02x}3c"


def heatmap(rows: Sequence[str], cols: Sequence[str], cells: Mapping[tuple[str, str], float | None], *,
            tooltips: Mapping[tuple[str, str], str] | None = None, title: str = "heatmap",
            cell_w: int = 54, cell_h: int = 24) -> str:
    """rows x cols grid, each cell coloured and labelled by its value in [0, 1]."""
    tooltips = tooltips or {}
    left = 12 + 7 * max((len(r) for r in rows), default=4)
    top = 14 + 6 * max((len(c) for c in cols), default=4)
    # Column labels are rotated -45 degrees, so the last ones reach past the grid to the right.
    overhang = 5 * max((len(c) for c in cols), default=4)
    width, height = left + cell_w * len(cols) + overhang, top + cell_h * len(rows) + 10
    body = []
    for j, col in enumerate(cols):
        x = left + j * cell_w + cell_w / 2
        body.append(_text(x, top - 6, col, size=10, anchor="start", rotate=-45))
    for i, row in enumerate(rows):
        y = top + i * cell_h
        body.append(_text(left - 6, y + cell_h * 0.65, row, anchor="end"))
        for j, col in enumerate(cols):
            v = cells.get((row, col))
            x = left + j * cell_w
            tip = tooltips.get((row, col), f"{row} / {col}: {_fmt(v)}")
            body.append(f'<g><title>{esc(tip)}</title><rect x="{x}" y="{y}" width="{cell_w - 2}" '
                        f'height="{cell_h - 2}" fill="{score_colour(v)}" data-value="{_fmt(v, 4)}"/>')
            body.append(_text(x + (cell_w - 2) / 2, y + cell_h * 0.62, _fmt(v), size=10, anchor="middle",
                              fill="#111" if v is not None else MUTED) + "</g>")
    return _svg(width, height, body, title)


@dataclass
class Bar:
    label: str
    mean: float | None
    lo: float | None = None
    hi: float | None = None
    muted: bool = False  # drawn grey (emulated runs: not evidence)


def bar_ci(bars: Sequence[Bar], *, x_max: float = 1.0, title: str = "bars", x_label: str = "",
           reference: float | None = None, reference_label: str = "") -> str:
    """Horizontal bars with 95% CI whiskers; an optional vertical reference line (a threshold)."""
    left = 14 + 7 * max((len(b.label) for b in bars), default=4)
    plot_w, row_h = 360, 26
    width, height = left + plot_w + 70, 30 + row_h * len(bars) + 34
    sx = plot_w / x_max if x_max > 0 else 0.0
    body = []
    for k in range(5):
        v = x_max * k / 4
        x = left + v * sx
        body.append(f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{height - 30}" stroke="#ddd"/>')
        body.append(_text(x, height - 16, f"{v:g}", size=10, anchor="middle"))
    if x_label:
        body.append(_text(left + plot_w / 2, height - 3, x_label, size=10, anchor="middle"))
    for i, b in enumerate(bars):
        y = 24 + i * row_h
        colour = MUTED if b.muted else PALETTE[i % len(PALETTE)]
        body.append(_text(left - 6, y + 14, b.label, anchor="end"))
        if b.mean is None:
            body.append(_text(left + 4, y + 14, "not measured", fill=MUTED))
            continue
        w = max(0.0, min(b.mean, x_max)) * sx
        body.append(f'<rect class="bar" x="{left}" y="{y + 4}" width="{w:.1f}" height="14" fill="{colour}" '
                    f'opacity="0.8"><title>{esc(b.label)}: {_fmt(b.mean, 3)} '
                    f'[{_fmt(b.lo, 3)}, {_fmt(b.hi, 3)}]</title></rect>')
        if b.lo is not None and b.hi is not None:
            x1, x2, yc = left + b.lo * sx, left + min(b.hi, x_max) * sx, y + 11
            body.append(f'<g class="whisker" stroke="#222"><line x1="{x1:.1f}" y1="{yc}" x2="{x2:.1f}" y2="{yc}"/>'
                        f'<line x1="{x1:.1f}" y1="{yc - 5}" x2="{x1:.1f}" y2="{yc + 5}"/>'
                        f'<line x1="{x2:.1f}" y1="{yc - 5}" x2="{x2:.1f}" y2="{yc + 5}"/></g>')
        body.append(_text(left + plot_w + 6, y + 15, _fmt(b.mean, 3), size=10))
    if reference is not None and 0 <= reference <= x_max:
        x = left + reference * sx
        body.append(f'<line x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{height - 30}" stroke="#444" '
                    f'stroke-dasharray="4 3"/>')
        body.append(_text(x, 13, reference_label or f"{reference:g}", size=10, anchor="middle"))
    return _svg(width, height, body, title)


@dataclass
class Point:
    label: str
    x: float  # cost per document (USD); 0 = free (drawn in the "0" gutter and as a reference line)
    y: float  # accuracy
    size_value: float | None = None  # p95 latency (s): drawn as the marker's radius
    muted: bool = False
    on_frontier: bool = False


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both cost (lower) and accuracy (higher), cheapest first."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        if p.y > best:
            front.append(p)
            best = p.y
    return front


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values inside [10**lo, 10**hi]: the decades, or 1-2-5 steps when under two decades show."""
    for steps in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in steps
                 if lo - 1e-9 <= math.log10(m * 10.0 ** e) <= hi + 1e-9]
        if len(ticks) >= 3:
            return ticks
    return ticks


MAX_R, MIN_R = 14.0, 4.0


def marker_radius(value: float | None, largest: float | None) -> float:
    """Area grows with the value (radius with its square root); no value: a fixed small marker."""
    if value is None or not largest:
        return 5.0
    return MIN_R + (MAX_R - MIN_R) * math.sqrt(max(0.0, value) / largest)


def scatter(points: Sequence[Point], *, title: str = "scatter", x_label: str = "", y_label: str = "",
            y_range: tuple[float, float] = (0.0, 1.0), size_label: str = "p95 latency", size_unit: str = "s") -> str:
    """Cost (x, log) vs accuracy (y); marker area grows with `size_value`; the Pareto front is joined.

    A log axis cannot show cost 0, so free runs (an own OCR baseline) sit in a "0" column left of
    an axis break, and their accuracy is drawn across the plot as a dashed reference line. Every
    marker is inset from the plot's edges by the largest radius, so none is clipped.
    """
    left, top, plot_w, plot_h = 58, 16, 420, 240
    labels = [p.label for p in points] + [f"{size_label} 00.0 {size_unit}"]
    legend_w = 40 + int(6.2 * max(len(t) for t in labels))
    width = left + plot_w + max(150, legend_w)
    sizes = [p.size_value for p in points if p.size_value is not None]
    smax = max(sizes) if sizes else None
    legend_h = top + 16 * len(points) + (44 + 2 * MAX_R if smax else 0)
    height = max(top + plot_h + 46, legend_h + 8)
    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    if not points:
        body.append(_text(left + plot_w / 2, top + plot_h / 2, "not measured: no backend has both cost and accuracy",
                          anchor="middle", fill=MUTED))
        return _svg(width, height, body, title)
    pad = MAX_R + 3
    free = [p for p in points if p.x <= 0]
    paid = [p for p in points if p.x > 0]
    gutter = 44 if free else 0
    x_free = left + gutter / 2
    lo_px, hi_px = left + gutter + pad, left + plot_w - pad
    if paid:
        lo = math.log10(min(p.x for p in paid))
        hi = math.log10(max(p.x for p in paid))
        if hi - lo < 1:  # at least one decade, centred on the data, so ticks have room
            mid = (lo + hi) / 2
            lo, hi = mid - 0.5, mid + 0.5
    else:
        lo, hi = -3.0, -1.0

    def fx(x: float) -> float:
        if x <= 0:
            return x_free
        return lo_px + (math.log10(x) - lo) / (hi - lo) * (hi_px - lo_px)

    y0, y1 = y_range

    def fy(y: float) -> float:
        return top + plot_h - pad - (min(max(y, y0), y1) - y0) / (y1 - y0) * (plot_h - 2 * pad)

    if paid:
        for t in _log_ticks(lo, hi):
            body.append(f'<line x1="{fx(t):.1f}" y1="{top}" x2="{fx(t):.1f}" y2="{top + plot_h}" stroke="#e4e4e4"/>')
            body.append(_text(fx(t), top + plot_h + 14, f"{t:g}", size=10, anchor="middle"))
    else:
        body.append(_text((left + gutter + left + plot_w) / 2, top + plot_h / 2, "no priced backend",
                          anchor="middle", fill=MUTED))
    if free:  # the "0" column and the axis break that separates it from the log scale
        xb = left + gutter
        body.append(f'<line class="axis-break" x1="{xb}" y1="{top}" x2="{xb}" y2="{top + plot_h}" stroke="#bbb"/>')
        body.append(f'<path d="M{xb - 4},{top + plot_h + 4} l4,-8 M{xb},{top + plot_h + 4} l4,-8" stroke="#666"/>')
        body.append(_text(x_free, top + plot_h + 14, "0", size=10, anchor="middle"))
    for k in range(6):
        yv = y0 + (y1 - y0) * k / 5
        body.append(f'<line x1="{left}" y1="{fy(yv):.1f}" x2="{left + plot_w}" y2="{fy(yv):.1f}" stroke="#e4e4e4"/>')
        body.append(_text(left - 6, fy(yv) + 4, f"{yv:.1f}", size=10, anchor="end"))
    body.append(_text(left + plot_w / 2, top + plot_h + 32, x_label + (" (log scale)" if paid else ""), size=11,
                      anchor="middle"))
    body.append(_text(14, top + plot_h / 2, y_label, size=11, anchor="middle", rotate=-90))
    for p in free:
        colour = MUTED if p.muted else "#444"
        body.append(f'<line class="reference" x1="{left + gutter}" y1="{fy(p.y):.1f}" x2="{left + plot_w}" '
                    f'y2="{fy(p.y):.1f}" stroke="{colour}" stroke-dasharray="2 3"/>')
        # Labelled above the line next to the break: the staircase frontier only runs along the line there.
        body.append(_text(left + gutter + 6, fy(p.y) - 4, f"{p.label}: cost 0, {p.y:.3f}", size=10, fill="#444"))
    front = sorted((p for p in points if p.on_frontier), key=lambda p: p.x)
    if len(front) > 1:
        # A staircase: between two frontier runs, spending more buys nothing until the next one.
        steps = [(fx(front[0].x), fy(front[0].y))]
        for a, b in pairwise(front):
            steps += [(fx(b.x), fy(a.y)), (fx(b.x), fy(b.y))]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in steps)
        body.append(f'<polyline class="frontier" points="{path}" fill="none" stroke="#555" stroke-dasharray="6 3"/>')
    lx = left + plot_w + 14
    for i, p in enumerate(points):
        r = marker_radius(p.size_value, smax)
        colour = MUTED if p.muted else PALETTE[i % len(PALETTE)]
        fill = "none" if p.muted else colour
        tip = (f"{p.label}: cost/doc {p.x:.3g}, accuracy {p.y:.3f}, {size_label} {_fmt(p.size_value)} {size_unit}"
               + ("; on the frontier" if p.on_frontier else ""))
        body.append(f'<circle class="point" cx="{fx(p.x):.1f}" cy="{fy(p.y):.1f}" r="{r:.1f}" fill="{fill}" '
                    f'fill-opacity="0.55" stroke="{colour}" stroke-width="2"><title>{esc(tip)}</title></circle>')
        ly = top + 14 + i * 16
        body.append(f'<circle cx="{lx}" cy="{ly - 4}" r="5" fill="{fill}" stroke="{colour}" stroke-width="2"/>')
        body.append(_text(lx + 10, ly, p.label, size=10))
    if smax:  # what the marker size means, with the smallest and largest values drawn to scale
        y = top + 16 * len(points) + 22
        body.append(_text(lx - 6, y, f"marker area: {size_label}", size=10, fill="#444"))
        shown = sorted({min(sizes), smax})
        cx = lx + MAX_R - 6
        for v in shown:
            r = marker_radius(v, smax)
            cy = y + 8 + MAX_R
            body.append(f'<circle class="size-key" cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="none" stroke="#666"/>')
            body.append(_text(cx, cy + MAX_R + 12, f"{v:.2g} {size_unit}", size=10, anchor="middle"))
            cx += 2 * MAX_R + 30
    return _svg(width, height, body, title)


def histogram_counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin [e_i, e_i+1); the last bin includes its right edge; outside values dropped."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        if v < edges[0] or v > edges[-1]:
            continue
        lo, hi = 0, len(edges) - 1
        while hi - lo > 1:  # bisect: the bin whose left edge is the last one <= v
            mid = (lo + hi) // 2
            if edges[mid] <= v:
                lo = mid
            else:
                hi = mid
        counts[lo] += 1
    return counts


def histograms(series: Mapping[str, Sequence[float]], *, bins: int = 24, title: str = "histogram",
               x_label: str = "", muted: Sequence[str] = ()) -> str:
    """Small multiples on one shared x axis, one row per series, with p50/p95 marks."""
    left, plot_w, row_h = 14 + 7 * max((len(k) for k in series), default=4), 380, 56
    width, height = left + plot_w + 20, 12 + row_h * max(1, len(series)) + 36
    all_vals = [v for vals in series.values() for v in vals]
    body = []
    if not all_vals:
        body.append(_text(left, 30, "not measured: no latencies recorded", fill=MUTED))
        return _svg(width, height, body, title)
    x_hi = max(all_vals) or 1.0
    edges = [x_hi * k / bins for k in range(bins + 1)]
    bw = plot_w / bins
    for i, (name, vals) in enumerate(series.items()):
        y = 10 + i * row_h
        body.append(_text(left - 6, y + row_h / 2, name, anchor="end"))
        body.append(f'<line x1="{left}" y1="{y + row_h - 8}" x2="{left + plot_w}" y2="{y + row_h - 8}" stroke="#bbb"/>')
        if not vals:
            body.append(_text(left + 4, y + row_h / 2, "not measured", fill=MUTED))
            continue
        counts = histogram_counts(vals, edges)
        cmax = max(counts) or 1
        colour = MUTED if name in muted else PALETTE[i % len(PALETTE)]
        for k, c in enumerate(counts):
            if not c:
                continue
            h = (row_h - 14) * c / cmax
            body.append(f'<rect class="bin" x="{left + k * bw:.1f}" y="{y + row_h - 8 - h:.1f}" width="{bw - 1:.1f}" '
                        f'height="{h:.1f}" fill="{colour}" opacity="0.75"><title>{edges[k]:.2f}-{edges[k + 1]:.2f}: '
                        f'{c}</title></rect>')
        ordered = sorted(vals)
        for q, dash in ((0.5, ""), (0.95, ' stroke-dasharray="3 2"')):
            xq = left + percentile(ordered, q * 100) / x_hi * plot_w
            body.append(f'<line x1="{xq:.1f}" y1="{y + 2}" x2="{xq:.1f}" y2="{y + row_h - 8}" stroke="#111"{dash}>'
                        f'<title>p{int(q * 100)} {percentile(ordered, q * 100):.2f}</title></line>')
    base = 10 + len(series) * row_h
    for k in range(5):
        v = x_hi * k / 4
        body.append(_text(left + v / x_hi * plot_w, base + 6, f"{v:.2g}", size=10, anchor="middle"))
    body.append(_text(left + plot_w / 2, base + 22, x_label + " (solid: p50, dashed: p95)", size=10, anchor="middle"))
    return _svg(width, height, body, title)
