"""Learning curves as inline SVG, coloured like HiPlot's parallel plot so a trial keeps one
colour across the page. (HiPlot's XY plot would need one row per epoch, which would also add
lines to the parallel plot.)"""
from __future__ import annotations

import html
import math

from tuner.report.data import StudyData, metric_order
from tuner.store import COMPLETED, FAILED, INTERRUPTED, PRUNED, RUNNING

STATUS_COLORS = {COMPLETED: "#2e7d32", FAILED: "#c62828", RUNNING: "#1565c0", INTERRUPTED: "#ef6c00",
                 PRUNED: "#6d4c41"}
MISSING_COLOR = "#9aa0a6"  # trials without an objective, in the learning curves


def fmt(value) -> str:
    """A value as the page's text shows it: 4 significant digits, – when missing."""
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _turbo(t: float) -> str:
    """d3's interpolateTurbo, HiPlot's default colour map: curves match the parallel plot."""
    t = min(1.0, max(0.0, t))
    channels = (34.61 + t * (1172.33 - t * (10793.56 - t * (33300.12 - t * (38394.49 - t * 14825.05)))),
                23.31 + t * (557.33 + t * (1225.33 - t * (3574.96 - t * (1073.77 + t * 707.56)))),
                27.2 + t * (3211.1 - t * (15327.97 - t * (27814 - t * (22569.18 - t * 6838.66)))))
    return "rgb({},{},{})".format(*(max(0, min(255, round(c))) for c in channels))


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(f * mag for f in (1, 2, 2.5, 5, 10) if f * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _shares(data: StudyData) -> dict[int, float]:
    """Scored trials on HiPlot's colour scale: 0 the lowest objective, 1 the highest. (HiPlot's
    '#inverse' colour maps compute f(-t) and paint every row alike, so minimised objectives keep
    this scale too: the legend says which end is which.)"""
    objs = {t.number: t.objective for t in data.trials if t.objective is not None and math.isfinite(t.objective)}
    lo, hi = min(objs.values(), default=0.0), max(objs.values(), default=0.0)
    return {n: 0.5 if hi == lo else (v - lo) / (hi - lo) for n, v in objs.items()}


def _chart(metric: str, series: dict, share: dict, minimise: bool, labels: dict, references: dict) -> str:
    """One metric's curves, a polyline per trial: the best on top, then the trials without an
    objective (dashed grey; a failed run's curve often shows why it failed). `references`:
    label -> a baseline's value of the metric, drawn as a labelled dashed line across."""
    w, h, left, right, top, bottom = 440, 250, 58, 14, 30, 38
    points = [p for pts in series.values() for p in pts]
    x0, x1 = min(e for e, _ in points), max(e for e, _ in points)
    values = [v for _, v in points] + list(references.values())  # the lines stay inside the chart
    y0, y1 = min(values), max(values)
    pad = (y1 - y0) * 0.06 or abs(y0) * 0.1 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1

    def sx(e):
        return left + (e - x0) / (x1 - x0) * (w - left - right)

    def sy(v):
        return top + (y1 - v) / (y1 - y0) * (h - top - bottom)

    out = [f'<svg class="tr-chart" viewBox="0 0 {w} {h}" role="img">',
           f'<text x="{left}" y="18" class="tr-ct">{html.escape(metric)}</text>']
    for v in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" class="tr-grid"/>'
                   f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{_tick(v)}</text>')
    for e in _ticks(x0, x1, min(6, max(1, int(x1 - x0)))):
        if float(e).is_integer():
            out.append(f'<text x="{sx(e):.1f}" y="{h - bottom + 16}" text-anchor="middle">{int(e)}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle" class="tr-dim">epoch</text>')
    for label, value in references.items():
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{sy(value):.1f}" y2="{sy(value):.1f}" class="tr-ref">'
                   f'<title>{html.escape(f"{label}: {metric} = {value:.4g}")}</title></line>')
    for number in sorted(series, key=lambda n: (n not in share, (-1 if minimise else 1) * share.get(n, 0.0))):
        pts = sorted(series[number])
        color, dash = (_turbo(share[number]), "") if number in share else (MISSING_COLOR, ' stroke-dasharray="4 3"')
        coords = " ".join(f"{sx(e):.1f},{sy(v):.1f}" for e, v in pts)
        tip = html.escape(f"trial {number}: {labels[number]}; last {metric} = {pts[-1][1]:.4g}")
        dots = "".join(f'<circle cx="{sx(e):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{color}"/>' for e, v in pts)
        out.append(f'<g><title>{tip}</title><polyline points="{coords}" fill="none" stroke="{color}" '
                   f'stroke-width="2" stroke-opacity="0.9"{dash}/>{dots}</g>')
    out += _reference_labels(references, sy, w - right - 3, top + 8)
    out.append("</svg>")
    return "".join(out)


def _reference_labels(references: dict, sy, x: float, highest: float) -> list[str]:
    """"EASE 0.2276" just above each reference line, on top of the curves; labels of close values
    are pushed down so they never overlap (13 px: the line box of the 11 px text)."""
    out, previous = [], -math.inf
    for label, value in sorted(references.items(), key=lambda lv: sy(lv[1])):
        y = max(sy(value) - 3, previous + 13, highest)
        previous = y
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" class="tr-reflabel">'
                   f'{html.escape(label)} {value:.4g}</text>')
    return out


def curves_section(data: StudyData) -> str:
    """The learning-curves card: a chart per metric, validation metrics first; "" without epochs."""
    if not data.curves:
        return ""
    share, minimise = _shares(data), data.study.direction == "min"
    labels = {t.number: ", ".join([t.status.lower()] + [f"{p.name}={fmt(t.params[p.name])}"
                                                        for p in data.params if p.name in t.params])
              for t in data.trials}
    names = metric_order(data.curves, data.study.objective)
    names = [n for n in names if n.startswith("val_")] + [n for n in names if not n.startswith("val_")]
    charts = "".join(_chart(n, {k: v for k, v in data.curves[n].items() if k in labels}, share, minimise, labels,
                            data.references.of(n) if n.startswith("val_") else {})
                     for n in names)
    legend = ""
    objs = [t.objective for t in data.trials if t.number in share]
    if objs:
        stops = "".join(f'<stop offset="{i / 10}" stop-color="{_turbo(i / 10)}"/>' for i in range(11))
        legend = (f'<div class="tr-legend">colour: {html.escape(data.study.objective)} {fmt(min(objs))} '
                  f'<svg width="160" height="10"><defs><linearGradient id="tr-turbo">{stops}</linearGradient>'
                  f'</defs><rect width="160" height="10" fill="url(#tr-turbo)" rx="2"/></svg> {fmt(max(objs))} '
                  f'<span class="tr-dash"></span> no objective (failed or running)'
                  + (f'<span class="tr-refkey"></span> {", ".join(map(html.escape, data.references.values))}: '
                     'their final value, every val user' if data.references.values else "")
                  + '</div>')
    return (f'<section class="tr-card"><h2>Learning curves</h2><p class="tr-note">per-epoch metrics of every '
            f'trial; hover a line for its trial</p><div class="tr-charts">{charts}</div>{legend}</section>')
