"""The report page: one standalone HTML file (HiPlot's bundle inlined; opens offline) with a
row per trial: every searched parameter, status, duration, worker and every final metric,
coloured by the study's objective, log-scale parameters on log axes. Beside the best trial, its
objective against the baselines' (`references`); below the plot, learning curves (`charts`),
parameter importance (`importance`) and the failed trials' errors.

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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuner import paths
from tuner.report.charts import MISSING_COLOR, STATUS_COLORS, curves_section, fmt
from tuner.report.data import StudyData, is_number, metric_order, read_study
from tuner.report.importance import Importance, parameter_importance
from tuner.store import FAILED, INTERRUPTED, Store
from tuner.store.studies import study_slug

_HIPLOT_ID = "hiplot_report"


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


def render_page(store: Store, study: str, live: str = "") -> tuple[str, list[Importance], str, int]:
    """(page, importance, importance note, number of trials); `live` is markup added at the end."""
    data = read_study(store, study)
    importance, note = parameter_importance(data)
    if data.space_note:
        note = f"{note}. Note: {data.space_note}"
    sections = (curves_section(data) + '<div class="tr-row">' + _importance_section(importance, note)
                + _failures_section(data) + "</div>")
    x_axis = importance[0].parameter if importance else None  # the XY plot: objective vs the top parameter
    page = _page(data, sections, live, f"{data.study.name} · tuner report", x_axis)
    return page, importance, note, len(data.trials)


def default_path(study: str) -> Path:
    """reports/<study>.html, the study's name made a file name by `study_slug`: at most
    80 + 11 + 5 ASCII characters, far inside the 255-byte limit on a file name."""
    return Path("reports") / f"{study_slug(study)}.html"


def write_report(store: Store, study: str, out: str | Path | None = None) -> ReportResult:
    """Writes the study's standalone report page (default `default_path(study)`)."""
    page, importance, note, n = render_page(store, study)
    path = paths.write_out(out if out is not None else default_path(study), "--out", page)
    return ReportResult(path, importance, note, n)


# --- the HiPlot experiment ----------------------------------------------------------------------


def _inert(text: str) -> str:
    return str(text).replace("<", "‹").replace(">", "›")


def _cell(value):
    """A value as HiPlot shows it: finite numbers, inert strings, None for missing."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    if is_number(value):  # 5 significant digits: a table people read, not an archive
        return None if not math.isfinite(value) else float(f"{value:.5g}") if isinstance(value, float) else value
    if isinstance(value, str):
        return _inert(value)
    return _inert(json.dumps(value))


def _rows(data: StudyData) -> tuple[list[dict], list[str]]:
    objective = data.study.objective
    metric_names = metric_order({objective} | {k for f in data.finals.values() for k in f}, objective)
    rows = []
    for t in data.trials:
        row = {"uid": str(t.number)}
        row.update({p.name: _cell(t.params.get(p.name)) for p in data.params})
        finals = data.finals.get(t.number, {})
        row.update({name: _cell(finals.get(name)) for name in metric_names})
        row[objective] = _cell(t.objective)  # the store's verdict: None unless COMPLETED (PRUNED: its last epoch)
        row.update(status=t.status, duration_s=None if t.duration is None else round(t.duration, 1),
                   worker=_cell(t.worker), started=None if t.started is None else f"{t.started:%Y-%m-%d %H:%M:%S}",
                   error=_cell(t.error))
        rows.append(row)
    return rows, metric_names


def _experiment(data: StudyData, rows: list[dict], metric_names: list[str], x_axis: str | None):
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


def js_string(value: str) -> str:
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


def _page(data: StudyData, sections: str, live: str, title: str, x_axis: str | None) -> str:
    header = _STYLE + _header(data, bool(live))
    if not data.trials:
        body = f'{header}<main class="tr-main"><p class="tr-empty">No trials yet.</p></main>{live}'
        return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
                f'<body style="margin:0px">{body}</body></html>')
    rows, metric_names = _rows(data)
    options = {"dataProviderName": "none", "experiment": _experiment(data, rows, metric_names, x_axis)._asdict()}
    setup = f"Object.assign(options, JSON.parse({js_string(json.dumps(options, allow_nan=False))}));"
    page = _hiplot_page()
    page = page.replace("<title>HiPlot</title>", f"<title>{html.escape(title)}</title>")
    page = page.replace("/*ON_LOAD_SCRIPT_INJECT*/", setup)
    page = page.replace("<!--TUNER_HEAD-->", header)
    return page.replace("<!--TUNER_TAIL-->", f'<main class="tr-main">{sections}</main>{live}')


def _header(data: StudyData, live: bool) -> str:
    s, esc = data.study, html.escape
    counts = "".join(f'<span class="tr-chip" style="--c:{STATUS_COLORS.get(k, MISSING_COLOR)}">{esc(k.lower())} '
                     f'{n}</span>' for k, n in sorted(s.counts.items()))
    goal = "minimise" if s.direction == "min" else "maximise"
    best = '<span class="tr-dim">no completed trial yet</span>'
    if data.best is not None:
        values = " · ".join(f"{esc(p.name)} = <b>{esc(fmt(data.best.params.get(p.name)))}</b>"
                            for p in data.params if p.name in data.best.params)
        best = (f'best: trial {data.best.number} — {esc(s.objective)} = <b>{fmt(data.best.objective)}</b>'
                f'<br><span class="tr-dim">{values}</span>{_references_table(data)}')
    badge = '<span class="tr-live">live</span>' if live else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<header class="tr-head"><div><div class="tr-kicker">tuner study {badge}</div>'
            f'<h1>{esc(s.name)}</h1><div class="tr-sub">{goal} <b>{esc(s.objective)}</b> · {esc(s.oracle)} search · '
            f'{len(data.trials)} trials {counts}</div></div><div class="tr-best">{best}'
            f'<div class="tr-dim tr-when">generated {when}</div></div></header>')


def _references_table(data: StudyData) -> str:
    """The best trial's objective (and its test counterpart) beside MostPopular's, EASE's and ALS's,
    and best ÷ the strongest baseline on val; "" when the trials hold no baseline values."""
    objective, refs, esc = data.study.objective, data.references, html.escape
    strongest = refs.strongest(objective, data.study.direction == "min")
    if strongest is None:
        return ""
    test = "test_" + objective.removeprefix("val_") if objective.startswith("val_") else None
    best_test = data.finals.get(data.best.number, {}).get(test)
    rows = [(f"best (trial {data.best.number})", data.best.objective, best_test, "tr-refbest")]
    rows += [(label, v.get(objective), v.get(test), "") for label, v in refs.values.items()]
    head = f"<th></th><th>{esc(objective)}</th>" + (f"<th>{esc(test)}</th>" if test else "")
    body = "".join(f'<tr class="{cls}"><td>{esc(label)}</td><td>{fmt(val)}</td>'
                   + (f"<td>{fmt(tst)}</td>" if test else "") + "</tr>" for label, val, tst, cls in rows)
    label, value = strongest
    ratios = []
    if value:
        ratios.append(f"<b>{data.best.objective / value:.2f}×</b> on val")
    base_test = refs.values[label].get(test)
    if best_test is not None and base_test:
        ratios.append(f"<b>{best_test / base_test:.2f}×</b> on test")
    ratio = f'<div>best ÷ {esc(label)}, the strongest baseline: {", ".join(ratios)}</div>' if ratios else ""
    note = f'<div class="tr-dim tr-refnote">note: {esc(refs.note)}</div>' if refs.note else ""
    return (f'<table class="tr-refs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<div class="tr-refratio">{ratio}</div>{note}')


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


def _failures_section(data: StudyData) -> str:
    failed = [t for t in data.trials if t.status in (FAILED, INTERRUPTED)]
    if not failed:
        return ""
    esc = html.escape
    rows = "".join(f'<tr><td>{t.number}</td><td><span class="tr-chip" style="--c:{STATUS_COLORS[t.status]}">'
                   f'{t.status.lower()}</span></td><td>{esc(t.worker or "")}</td><td class="tr-err">'
                   f'{esc(t.error or "")}</td></tr>' for t in failed)
    return (f'<section class="tr-card"><h2>Failed trials</h2><table class="tr-fail"><thead><tr><th>trial'
            f'</th><th>status</th><th>worker</th><th>error</th></tr></thead><tbody>{rows}</tbody></table></section>')


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
.tr-refs{border-collapse:collapse;margin:8px 0 2px auto;font-size:12.5px;font-variant-numeric:tabular-nums}
.tr-refs th{color:#9ca3af;font-weight:500;padding:1px 0 1px 14px;text-align:right}
.tr-refs td{padding:1px 0 1px 14px;text-align:right;color:#d1d5db}.tr-refs td:first-child{text-align:left;padding-left:0}
.tr-refs .tr-refbest td{color:#fff;font-weight:600}.tr-refratio,.tr-refnote{font-size:12.5px}
.tr-chart .tr-ref{stroke:#374151;stroke-width:1.5;stroke-dasharray:6 4}
.tr-chart .tr-reflabel{fill:#111827;font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.tr-refkey{display:inline-block;width:26px;border-top:1.5px dashed #374151;margin-left:14px}
</style>"""
