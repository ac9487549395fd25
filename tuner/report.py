"""A study as a page people look at: a HiPlot report, and a live dashboard of it.

One standalone HTML file (HiPlot's bundle inlined; opens offline) with a row per trial:
every searched parameter, status, duration, worker and every final metric, coloured by the
study's objective, log-scale parameters on log axes. Below it, learning curves (inline SVG:
HiPlot's XY plot would need one row per epoch, which would also add lines to the parallel
plot), parameter importance and the failed trials' errors.

Everything in the page that comes from users (study names, parameter values, metric names,
errors) is inert. HiPlot's own `Experiment.to_html` puts the rows in a <script> as plain JSON,
where a value holding "</script>" ends the script and starts markup; so the page is assembled
here, the rows' JS string literal with `<`, `>` and `&` escaped as \\u003c..., and text we write
HTML-escaped. HiPlot's table (DataTables) writes cell values as HTML, so angle brackets in
string cells become the look-alikes ‹ › (escapes would show verbatim on the plot's axis labels).
"""
from __future__ import annotations

import functools
import html
import json
import math
import re
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import sqlalchemy as sa

from tuner.config import ConfigError
from tuner.store import (COMPLETED, FAILED, INTERRUPTED, RUNNING, Store, Study, TrialRecord, best_trial, get_study,
                         list_metrics, list_trials, open_store)
from tuner.store.schema import metrics as metrics_table
from tuner.store.schema import trials as trials_table

MIN_IMPORTANCE_TRIALS = 4
IMPORTANCE_METHOD = ("random-forest permutation importance: a 200-tree random forest (scikit-learn) is fitted to "
                     "the objective of the completed trials, categorical parameters one-hot encoded; a "
                     "parameter's importance is the mean drop in R² when its values are shuffled (20 repeats)")
STATUS_COLORS = {COMPLETED: "#2e7d32", FAILED: "#c62828", RUNNING: "#1565c0", INTERRUPTED: "#ef6c00"}
MISSING_COLOR = "#9aa0a6"  # trials without an objective, in the learning curves
_HIPLOT_ID = "hiplot_report"


@dataclass(frozen=True)
class Importance:
    parameter: str
    score: float  # mean drop in R² when the parameter is shuffled
    std: float


@dataclass(frozen=True)
class ReportResult:
    path: Path
    importance: list[Importance]  # most important first; empty when not computable
    importance_note: str  # the method used, or why importance was not computed
    trials: int

    def importance_lines(self) -> list[str]:
        """The ranking as a terminal shows it, the method last."""
        if not self.importance:
            return [f"parameter importance {self.importance_note}"]
        width = max(len(i.parameter) for i in self.importance)
        return ([f"{i.parameter:<{width}}  {i.score:7.3f} ± {i.std:.3f}" for i in self.importance]
                + [f"({self.importance_note})"])


# --- reading the study -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    log: bool = False
    categorical: bool = False


@dataclass
class _Data:
    study: Study
    trials: list[TrialRecord]
    finals: dict  # trial number -> {metric: value}
    curves: dict  # metric -> trial number -> [(epoch, value)]
    params: list[_Param]  # in the space's order
    space_note: str  # why the space could not be read, or ""
    best: TrialRecord | None


def _searched(space_text: str, trials) -> tuple[list[_Param], str]:
    """The searched parameters in the space's order (constants left out) and a note when the stored
    space cannot be parsed any more (then: the trials' keys, linear axes)."""
    from tuner.space import load_space  # the one parser of the space syntax

    params, note = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(space_text)
        try:
            space = load_space(str(path))
            params = [_Param(p.path, p.distribution == "log_uniform_values", p.distribution == "categorical")
                      for p in space.parameters if p.distribution != "constant"]
        except ConfigError as exc:
            note = "the study's space could not be read (" + str(exc).replace(str(path), "space") + ")"
    known = {p.name for p in params}
    for t in trials:  # Hyperband's epoch budget varies too; its other tuner/* keys are bookkeeping
        for key, value in t.params.items():
            if key not in known and (not key.startswith("tuner/") or key == "tuner/epochs"):
                known.add(key)
                params.append(_Param(key, categorical=not _is_number(value)))
    return params, note


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read(store: Store, study: str) -> _Data:
    s = get_study(store, study)
    trials = list_trials(store, study)
    finals: dict = defaultdict(dict)
    curves: dict = defaultdict(lambda: defaultdict(list))
    for m in list_metrics(store, study):
        if m.epoch is None:
            finals[m.number][m.name] = m.value
        elif m.value is not None and math.isfinite(m.value):
            curves[m.name][m.number].append((m.epoch, m.value))
    params, note = _searched(s.space, trials)
    return _Data(s, trials, finals, curves, params, note, best_trial(store, study))


def _change_token(store: Store, study: str) -> str:
    """Changes whenever the report would: trials added, ended or changing status, epochs reported.
    A private query: the store has no cheap 'has this study changed' read."""
    t, m = trials_table, metrics_table
    with store.read() as conn:
        s = get_study(store, study, conn)
        last_end = conn.execute(sa.select(sa.func.max(t.c.ended)).where(t.c.study_id == s.id)).scalar()
        n_metrics = conn.execute(sa.select(sa.func.count()).select_from(m.join(t, t.c.id == m.c.trial_id))
                                 .where(t.c.study_id == s.id)).scalar_one()
    return json.dumps([sorted(s.counts.items()), str(last_end), n_metrics])


# --- the HiPlot experiment ------------------------------------------------------------------


def _inert(text: str) -> str:
    return str(text).replace("<", "‹").replace(">", "›")


def _cell(value):
    """A value as HiPlot shows it: finite numbers, inert strings, None for missing."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    if _is_number(value):  # 5 significant digits: a table people read, not an archive
        return None if not math.isfinite(value) else float(f"{value:.5g}") if isinstance(value, float) else value
    if isinstance(value, str):
        return _inert(value)
    return _inert(json.dumps(value))


def _metric_order(names, objective: str) -> list[str]:
    """Objective first, then validation, other, test and baseline metrics."""
    def rank(name):
        return (name != objective, name.startswith("most_popular"), name.startswith("test_"),
                not name.startswith("val_"), name)
    return sorted(names, key=rank)


def _rows(data: _Data) -> tuple[list[dict], list[str]]:
    objective = data.study.objective
    metric_names = _metric_order({objective} | {k for f in data.finals.values() for k in f}, objective)
    rows = []
    for t in data.trials:
        row = {"uid": str(t.number)}
        row.update({p.name: _cell(t.params.get(p.name)) for p in data.params})
        finals = data.finals.get(t.number, {})
        row.update({name: _cell(finals.get(name)) for name in metric_names})
        row[objective] = _cell(t.objective)  # the store's verdict: None unless COMPLETED
        row.update(status=t.status, duration_s=None if t.duration is None else round(t.duration, 1),
                   worker=_cell(t.worker), started=None if t.started is None else f"{t.started:%Y-%m-%d %H:%M:%S}",
                   error=_cell(t.error))
        rows.append(row)
    return rows, metric_names


def _experiment(data: _Data, rows: list[dict], metric_names: list[str], x_axis: str | None):
    import hiplot as hip

    objective, minimise = data.study.objective, data.study.direction == "min"
    exp = hip.Experiment.from_iterable(rows)
    defs = exp.parameters_definition
    defs["uid"].label_html = "trial"
    for p in data.params:
        defs[p.name].type = (hip.ValueType.CATEGORICAL if p.categorical
                             else hip.ValueType.NUMERIC_LOG if p.log else hip.ValueType.NUMERIC)
    for name in metric_names + ["duration_s"]:
        defs[name].type = hip.ValueType.NUMERIC
    defs["status"].type = hip.ValueType.CATEGORICAL
    defs["status"].colors = STATUS_COLORS
    exp.colorby = objective
    exp.enabledDisplays = [hip.Displays.PARALLEL_PLOT, hip.Displays.XY, hip.Displays.TABLE]
    # Parallel axes: the objective first (the right edge clips its label), the parameters, status,
    # duration, other validation metrics. Test and baseline metrics are reported, never searched on.
    order = [objective] + [p.name for p in data.params] + ["status", "duration_s"]
    order += [m for m in metric_names if m != objective and m.startswith("val_")]
    exp.display_data(hip.Displays.PARALLEL_PLOT).update(  # HiPlot lays `order` out right to left
        order=order[::-1], hide=[c for c in rows[0] if c not in order], invert=[objective] if minimise else [])
    table_order = ["uid", objective] + [p.name for p in data.params] + ["status", "duration_s"]
    table_order += [m for m in metric_names if m != objective] + ["worker", "started", "error"]
    exp.display_data(hip.Displays.TABLE).update(
        order=table_order, hide=["from_uid"], order_by=[[objective, "asc" if minimise else "desc"]])
    exp.display_data(hip.Displays.XY).update(axis_x=x_axis or (data.params[0].name if data.params else "uid"),
                                             axis_y=objective, dots_thickness=4, lines_thickness=0, height=320)
    return exp


# --- the page -----------------------------------------------------------------------------------


def _js_string(value: str) -> str:
    """A JS string literal safe inside <script>: no '<' can start '</script>' or '<!--'."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _replace_once(page: str, marker: str, text: str) -> str:
    if page.count(marker) != 1:
        raise RuntimeError(f"HiPlot page template: expected one {marker!r}, found {page.count(marker)}")
    return page.replace(marker, text)


@functools.cache
def _hiplot_page() -> str:
    """HiPlot's standalone page, its bundle inlined, with our insertion points. Built once
    (inlining 1.5 MB through BeautifulSoup takes a while); no user data ever passes through it."""
    from hiplot import render

    page = render.get_index_html_template().replace("hiplot_element_id", _HIPLOT_ID)
    page = _replace_once(page, '<body style="margin:0px">', '<body style="margin:0px"><!--TUNER_HEAD-->')
    page = _replace_once(page, "</body>", "<!--TUNER_TAIL--></body>")
    page = render.html_inlinize(page)
    for marker in ("<!--TUNER_HEAD-->", "<!--TUNER_TAIL-->", "/*ON_LOAD_SCRIPT_INJECT*/", "<title>HiPlot</title>"):
        _replace_once(page, marker, marker)
    return page


def _page(data: _Data, sections: str, live: str, title: str, x_axis: str | None) -> str:
    header = _STYLE + _header(data, bool(live))
    if not data.trials:
        body = f'{header}<main class="tr-main"><p class="tr-empty">No trials yet.</p></main>{live}'
        return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
                f'<body style="margin:0px">{body}</body></html>')
    rows, metric_names = _rows(data)
    options = {"dataProviderName": "none", "experiment": _experiment(data, rows, metric_names, x_axis)._asdict()}
    setup = f"Object.assign(options, JSON.parse({_js_string(json.dumps(options, allow_nan=False))}));"
    page = _hiplot_page()
    page = page.replace("<title>HiPlot</title>", f"<title>{html.escape(title)}</title>")
    page = page.replace("/*ON_LOAD_SCRIPT_INJECT*/", setup)
    page = page.replace("<!--TUNER_HEAD-->", header)
    return page.replace("<!--TUNER_TAIL-->", f'<main class="tr-main">{sections}</main>{live}')


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _header(data: _Data, live: bool) -> str:
    s, esc = data.study, html.escape
    counts = "".join(f'<span class="tr-chip" style="--c:{STATUS_COLORS.get(k, MISSING_COLOR)}">{esc(k.lower())} '
                     f'{n}</span>' for k, n in sorted(s.counts.items()))
    goal = "minimise" if s.direction == "min" else "maximise"
    best = '<span class="tr-dim">no completed trial yet</span>'
    if data.best is not None:
        values = " · ".join(f"{esc(p.name)} = <b>{esc(_fmt(data.best.params.get(p.name)))}</b>"
                            for p in data.params if p.name in data.best.params)
        best = (f'best: trial {data.best.number} — {esc(s.objective)} = <b>{_fmt(data.best.objective)}</b>'
                f'<br><span class="tr-dim">{values}</span>')
    badge = '<span class="tr-live">live</span>' if live else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<header class="tr-head"><div><div class="tr-kicker">tuner study {badge}</div>'
            f'<h1>{esc(s.name)}</h1><div class="tr-sub">{goal} <b>{esc(s.objective)}</b> · {esc(s.oracle)} search · '
            f'{len(data.trials)} trials {counts}</div></div><div class="tr-best">{best}'
            f'<div class="tr-dim tr-when">generated {when}</div></div></header>')


# --- learning curves ------------------------------------------------------------------------------


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


def _shares(data: _Data) -> dict[int, float]:
    """Scored trials on HiPlot's colour scale: 0 the lowest objective, 1 the highest. (HiPlot's
    '#inverse' colour maps compute f(-t) and paint every row alike, so minimised objectives keep
    this scale too: the legend says which end is which.)"""
    objs = {t.number: t.objective for t in data.trials if t.objective is not None and math.isfinite(t.objective)}
    lo, hi = min(objs.values(), default=0.0), max(objs.values(), default=0.0)
    return {n: 0.5 if hi == lo else (v - lo) / (hi - lo) for n, v in objs.items()}


def _chart(metric: str, series: dict, share: dict, minimise: bool, labels: dict) -> str:
    """One metric's curves, a polyline per trial: the best on top, then the trials without an
    objective (dashed grey; a failed run's curve often shows why it failed)."""
    w, h, left, right, top, bottom = 440, 250, 58, 14, 30, 38
    points = [p for pts in series.values() for p in pts]
    x0, x1 = min(e for e, _ in points), max(e for e, _ in points)
    y0, y1 = min(v for _, v in points), max(v for _, v in points)
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
    for number in sorted(series, key=lambda n: (n not in share, (-1 if minimise else 1) * share.get(n, 0.0))):
        pts = sorted(series[number])
        color, dash = (_turbo(share[number]), "") if number in share else (MISSING_COLOR, ' stroke-dasharray="4 3"')
        coords = " ".join(f"{sx(e):.1f},{sy(v):.1f}" for e, v in pts)
        tip = html.escape(f"trial {number}: {labels[number]}; last {metric} = {pts[-1][1]:.4g}")
        dots = "".join(f'<circle cx="{sx(e):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{color}"/>' for e, v in pts)
        out.append(f'<g><title>{tip}</title><polyline points="{coords}" fill="none" stroke="{color}" '
                   f'stroke-width="2" stroke-opacity="0.9"{dash}/>{dots}</g>')
    out.append("</svg>")
    return "".join(out)


def _curves_section(data: _Data) -> str:
    if not data.curves:
        return ""
    share, minimise = _shares(data), data.study.direction == "min"
    labels = {t.number: ", ".join([t.status.lower()] + [f"{p.name}={_fmt(t.params[p.name])}"
                                                        for p in data.params if p.name in t.params])
              for t in data.trials}
    names = _metric_order(data.curves, data.study.objective)
    names = [n for n in names if n.startswith("val_")] + [n for n in names if not n.startswith("val_")]
    charts = "".join(_chart(n, {k: v for k, v in data.curves[n].items() if k in labels}, share, minimise, labels)
                     for n in names)
    legend = ""
    objs = [t.objective for t in data.trials if t.number in share]
    if objs:
        stops = "".join(f'<stop offset="{i / 10}" stop-color="{_turbo(i / 10)}"/>' for i in range(11))
        legend = (f'<div class="tr-legend">colour: {html.escape(data.study.objective)} {_fmt(min(objs))} '
                  f'<svg width="160" height="10"><defs><linearGradient id="tr-turbo">{stops}</linearGradient>'
                  f'</defs><rect width="160" height="10" fill="url(#tr-turbo)" rx="2"/></svg> {_fmt(max(objs))} '
                  f'<span class="tr-dash"></span> no objective (failed or running)</div>')
    return (f'<section class="tr-card"><h2>Learning curves</h2><p class="tr-note">per-epoch metrics of every '
            f'trial; hover a line for its trial</p><div class="tr-charts">{charts}</div>{legend}</section>')


# --- parameter importance -------------------------------------------------------------------------


def _importance(data: _Data) -> tuple[list[Importance], str]:
    """Ranked importance and the method, or [] and why not. See IMPORTANCE_METHOD. Trees split on
    thresholds, so log-scale parameters need no log transform: the ranking is the same."""
    done = [t for t in data.trials
            if t.status == COMPLETED and t.objective is not None and math.isfinite(t.objective)]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return [], (f"not computed: needs at least {MIN_IMPORTANCE_TRIALS} completed trials with an objective "
                    f"(have {len(done)})")
    y = [t.objective for t in done]
    if max(y) == min(y):
        return [], "not computed: every completed trial has the same objective"
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns, categorical = {}, []
    for p in data.params:
        values = [t.params.get(p.name) for t in done]
        if all(v is None for v in values):
            continue
        if p.categorical or not all(v is None or _is_number(v) for v in values):
            columns[p.name] = ["(inactive)" if v is None else str(v) for v in values]
            categorical.append(p.name)
        else:  # inactive conditional parameters: NaN, which scikit-learn's forests split on
            columns[p.name] = [np.nan if v is None else float(v) for v in values]
    if not columns:
        return [], "not computed: the trials have no parameter values"
    x, y = pd.DataFrame(columns), np.array(y)
    encode = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), categorical)],
                               remainder="passthrough")
    model = make_pipeline(encode, RandomForestRegressor(n_estimators=200, random_state=0)).fit(x, y)
    mean, std = _permutation_importance(model, x, y, repeats=20)
    ranked = sorted((Importance(name, float(m), float(s)) for name, m, s in zip(x.columns, mean, std)),
                    key=lambda i: -i.score)
    return ranked, f"{IMPORTANCE_METHOD}; {len(done)} completed trials"


def _permutation_importance(model, x, y, repeats: int):
    """scikit-learn's permutation_importance (R² drop; a whole column shuffled, so a one-hot
    parameter moves as one), batched: every shuffled copy goes through a single predict. The
    stock one predicts copy by copy, ~10 s for 60 trials of 16 parameters; this takes well under 1 s."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    copies = []
    for name in x.columns:
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[name] = x[name].to_numpy()[rng.permutation(len(x))]
            copies.append(shuffled)
    predicted = model.predict(pd.concat(copies, ignore_index=True)).reshape(len(x.columns), repeats, len(x))
    total = ((y - y.mean()) ** 2).sum()
    baseline = 1 - ((model.predict(x) - y) ** 2).sum() / total
    drop = baseline - (1 - ((predicted - y) ** 2).sum(axis=2) / total)
    return drop.mean(axis=1), drop.std(axis=1)


def _importance_section(importance: list[Importance], note: str) -> str:
    esc = html.escape
    if not importance:
        return f'<section class="tr-card"><h2>Parameter importance</h2><p class="tr-note">{esc(note)}</p></section>'
    top = max(max(i.score for i in importance), 1e-12)
    items = "".join(
        f'<li><span class="tr-pname">{esc(i.parameter)}</span><span class="tr-bar"><i style="width:'
        f'{max(0.0, i.score) / top * 100:.1f}%"></i></span><span class="tr-num">{i.score:.3f} ± {i.std:.3f}</span>'
        f'</li>'
        for i in importance)
    return (f'<section class="tr-card"><h2>Parameter importance</h2><ol class="tr-imp">{items}</ol>'
            f'<p class="tr-note">{esc(note)}</p></section>')


def _failures_section(data: _Data) -> str:
    failed = [t for t in data.trials if t.status in (FAILED, INTERRUPTED)]
    if not failed:
        return ""
    esc = html.escape
    rows = "".join(f'<tr><td>{t.number}</td><td><span class="tr-chip" style="--c:{STATUS_COLORS[t.status]}">'
                   f'{t.status.lower()}</span></td><td>{esc(t.worker or "")}</td><td class="tr-err">'
                   f'{esc(t.error or "")}</td></tr>' for t in failed)
    return (f'<section class="tr-card"><h2>Failed trials</h2><table class="tr-fail"><thead><tr><th>trial'
            f'</th><th>status</th><th>worker</th><th>error</th></tr></thead><tbody>{rows}</tbody></table></section>')


# --- public API -----------------------------------------------------------------------------------


def _render(store: Store, study: str, live: str = "") -> tuple[str, list[Importance], str, int]:
    data = _read(store, study)
    importance, note = _importance(data)
    if data.space_note:
        note = f"{note}. Note: {data.space_note}"
    sections = (_curves_section(data) + '<div class="tr-row">' + _importance_section(importance, note)
                + _failures_section(data) + "</div>")
    x_axis = importance[0].parameter if importance else None  # the XY plot: objective vs the top parameter
    page = _page(data, sections, live, f"{data.study.name} · tuner report", x_axis)
    return page, importance, note, len(data.trials)


def default_path(study: str) -> Path:
    """reports/<study>.html, the name reduced to characters safe in any file system."""
    return Path("reports") / ((re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study") + ".html")


def write_report(store: Store, study: str, out: str | Path | None = None) -> ReportResult:
    """Writes the study's standalone report page (default reports/<study>.html)."""
    page, importance, note, n = _render(store, study)
    path = Path(out) if out is not None else default_path(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return ReportResult(path, importance, note, n)


class Dashboard:
    """The report served over HTTP, rebuilt when the study changes. Pages poll /token every
    `refresh_s` seconds and reload when it differs from theirs, so a browser follows a search."""

    def __init__(self, store_url: str, study: str, host: str, port: int, refresh_s: float):
        self.store, self.study, self.refresh_s = open_store(store_url), study, refresh_s
        self._lock = threading.Lock()
        self._token, self._page = None, b""
        self._thread: threading.Thread | None = None
        try:
            self.page()  # an unknown study fails here, before a port is taken
            self.server = ThreadingHTTPServer((host, port), _handler(self))
        except BaseException:
            self.store.close()
            raise
        self.url = f"http://{host}:{self.server.server_port}/"

    def token(self) -> str:
        return _change_token(self.store, self.study)

    def page(self) -> bytes:
        with self._lock:
            token = self.token()
            if token != self._token:
                live = _LIVE_SCRIPT % {"token": _js_string(token), "every_ms": int(self.refresh_s * 1000)}
                self._page = _render(self.store, self.study, live)[0].encode("utf-8")
                self._token = token
            return self._page

    def serve_forever(self) -> None:
        """Serves until shutdown() (from another thread) or Ctrl-C; then releases port and store."""
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()
            self.store.close()

    def start(self) -> "Dashboard":
        """Serves from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="tuner-dashboard", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
        else:
            self.server.server_close()
            self.store.close()


_LIVE_SCRIPT = """<script>
(function () {
  var token = %(token)s, every = %(every_ms)d;
  function check() {
    fetch("token", {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(function (d) { if (d.token !== token) location.reload(); })
      .catch(function () {}).finally(function () { setTimeout(check, every); });
  }
  setTimeout(check, every);
})();
</script>"""


def _handler(dashboard: Dashboard):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            try:
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", dashboard.page())
                elif path == "/token":
                    self._send(200, "application/json", json.dumps({"token": dashboard.token()}).encode())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found")
            except Exception as exc:  # noqa: BLE001  (one line to the browser; the next poll retries)
                self._send(500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}".splitlines()[0].encode())

        def _send(self, code: int, kind: str, body: bytes):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the CLI prints the URL once
            pass

    return Handler


def serve_dashboard(store_url: str, study: str, port: int = 8765, host: str = "127.0.0.1",
                    refresh_s: float = 5) -> Dashboard:
    """A dashboard bound to host:port (port 0: any free port), not yet serving: call
    `serve_forever()` (blocks) or `start()` (background thread), and `shutdown()` to stop."""
    return Dashboard(store_url, study, host, port, refresh_s)


_STYLE = """<style>
.tr-head{display:flex;justify-content:space-between;gap:24px;align-items:flex-end;padding:18px 28px 14px;
 background:#111827;color:#f9fafb;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.tr-head h1{margin:2px 0 4px;font-size:24px;font-weight:650;word-break:break-all}
.tr-kicker{text-transform:uppercase;letter-spacing:.08em;font-size:11px;color:#9ca3af}
.tr-sub b,.tr-best b{color:#fff}.tr-sub{color:#d1d5db}.tr-best{text-align:right;color:#e5e7eb;max-width:55%}
.tr-dim{color:#9ca3af}.tr-when{font-size:12px;margin-top:4px}
.tr-chip{display:inline-block;margin-left:6px;padding:0 8px;border-radius:10px;font-size:12px;color:#fff;
 background:var(--c)}
.tr-live{display:inline-block;margin-left:6px;padding:0 7px;border-radius:9px;background:#16a34a;color:#fff;
 letter-spacing:.04em}
.tr-main{padding:8px 20px 28px;background:#f3f4f6;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 color:#111827}
.tr-empty{font-size:16px;padding:40px 8px;color:#4b5563}
.tr-card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px 18px;margin:12px 0;
 box-shadow:0 1px 2px rgba(0,0,0,.04)}
.tr-card h2{font-size:16px;margin:0 0 4px;font-weight:650}
.tr-note{color:#6b7280;font-size:12.5px;margin:4px 0 8px}
.tr-row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}.tr-row>.tr-card{flex:1 1 420px;min-width:0}
.tr-charts{display:flex;flex-wrap:wrap;gap:8px 18px}
.tr-chart{flex:1 1 380px;max-width:600px;height:auto;font:11px system-ui,sans-serif;fill:#4b5563}
.tr-chart .tr-ct{font-size:13px;font-weight:600;fill:#111827}
.tr-chart .tr-grid{stroke:#e5e7eb}.tr-chart g:hover polyline{stroke-width:4}
.tr-legend{display:flex;align-items:center;gap:8px;color:#4b5563;font-size:12.5px;margin-top:6px}
.tr-dash{display:inline-block;width:26px;border-top:2px dashed #9aa0a6;margin-left:14px}
.tr-imp{list-style:none;padding:0;margin:6px 0}
.tr-imp li{display:grid;grid-template-columns:minmax(140px,220px) 1fr 110px;gap:10px;align-items:center;padding:3px 0}
.tr-pname{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;overflow-wrap:anywhere}
.tr-bar{background:#eef2ff;border-radius:3px;height:12px}.tr-bar i{display:block;height:12px;border-radius:3px;
 background:#4f46e5}
.tr-num{font-variant-numeric:tabular-nums;color:#374151;font-size:12.5px;text-align:right}
.tr-fail{border-collapse:collapse;width:100%;font-size:13px}.tr-fail th{text-align:left;color:#6b7280;
 font-weight:500;border-bottom:1px solid #e5e7eb;padding:4px 8px}
.tr-fail td{border-bottom:1px solid #f3f4f6;padding:5px 8px;vertical-align:top}
.tr-err{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.tr-fail .tr-chip{margin-left:0}
</style>"""
