"""The report and the dashboard on real SQLite stores, looked at in a real headless Chromium.

HiPlot 0.1.33 exposes no handle on its rendered state (window.hiplot_last_instance is null), so
the browser checks read the parallel plot's React props through its DOM node: the rows it
draws, its axes and scales, the colour of each row. HiPlot is pinned, so this is stable.
"""
import html
import json
import math
import os
import random
import re
import urllib.error
import urllib.request
from datetime import timedelta
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tuner import report
from tuner.space import SearchSettings, StudySettings
from tuner.store import COMPLETED, FAILED, PRUNED, RUNNING, StoreError, api, create_or_get_study, open_store

OBJECTIVE = "val_recall@10"
INJECTION = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
STUDY = "temp <b>&</b> </title><script>alert(3)</script>"
ODD_METRIC = "x</script><script>alert(4)</script>"  # a final metric name is a column name
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TUNER_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")


def space_text() -> str:
    """The built-in temperature space plus a log-scale learning rate and a categorical strategy."""
    data = yaml.safe_load((resources.files("tuner") / "spaces" / "temp.yaml").read_text())
    data["parameters"]["training.learning_rate"] = {"distribution": "log_uniform_values", "min": 1e-3, "max": 0.3}
    data["parameters"]["negatives.strategy"] = {"values": ["in_batch", "mns"]}
    return yaml.safe_dump(data, sort_keys=False)


def make_study(store, name=STUDY):
    return create_or_get_study(store, name=name, space=space_text(), settings=StudySettings(SearchSettings(
        objective=OBJECTIVE, direction="max", oracle="random", max_trials=20, seed=1)))[0]


def add_trial(store, study, params, epochs=(), finals=None, status=COMPLETED, error=None, seconds=60.0,
              worker="w0"):
    """A trial as a worker writes it: RUNNING under the study lock, per-epoch metrics, then its end."""
    started = api.utcnow() - timedelta(seconds=seconds)
    with api.study_lock(store, study.id) as locked:
        trial_id, number = locked.insert_trial(
            kt_trial_id=f"kt-{random.random()}", status=RUNNING, params=json.dumps(params),
            worker=worker, host="h", pid=1, started=started, heartbeat=started, retries=0, kt_state="{}", kt_version=1)
    for epoch, values in enumerate(epochs, start=1):
        assert api.report_epoch(store, trial_id, epoch, values)
    with api.study_lock(store, study.id) as locked:
        locked.add_metrics(trial_id, None, finals or {})
        locked.update_trial(trial_id, status=status, error=error, ended=started + timedelta(seconds=seconds),
                            objective=(finals or {}).get(OBJECTIVE) if status == COMPLETED else None)
    return number


def quality(temperature: float) -> float:
    """A validation recall peaking at temperature 0.05."""
    return 0.09 - 0.02 * (math.log10(temperature) + 1.3) ** 2


def curve(q: float, epochs: int = 4) -> list[dict]:
    return [{"loss": 900.0 / e * (1.2 - 2 * q), OBJECTIVE: q * (1 - 0.5 ** e)} for e in range(1, epochs + 1)]


def finals(q: float) -> dict:
    return {OBJECTIVE: q, "val_recall@100": 3 * q, "test_recall@10": 0.9 * q, "test_ndcg@10": 0.5 * q,
            "most_popular_test_recall@10": 0.05, ODD_METRIC: 1.0}


def build_study(store, name=STUDY) -> tuple[object, list[int]]:
    """Six completed trials over three decades of temperature, one failed with an injection for an error."""
    study = make_study(store, name)
    rng = random.Random(0)
    numbers = []
    for i, temperature in enumerate([0.002, 0.011, 0.03, 0.07, 0.25, 0.8]):
        params = {"retrieval.temperature": temperature, "training.learning_rate": 10 ** rng.uniform(-3, -0.5),
                  "negatives.strategy": ["in_batch", "mns"][i % 2]}
        q = quality(temperature)
        numbers.append(add_trial(store, study, params, curve(q), finals(q), seconds=50 + 10 * i, worker=f"w{i % 2}"))
    failed = {"retrieval.temperature": 0.004, "training.learning_rate": 0.2, "negatives.strategy": "mns"}
    numbers.append(add_trial(store, study, failed, curve(0.01, epochs=2), status=FAILED, error=INJECTION,
                             worker="<img src=x onerror=alert(5)>"))
    return study, numbers


def embedded_rows(page: str) -> list[dict]:
    """The datapoints HiPlot will draw, decoded from the page the way its script decodes them."""
    literal = re.search(r"Object\.assign\(options, JSON\.parse\((\".*?\")\)\);", page).group(1)
    return json.loads(json.loads(literal))["experiment"]["datapoints"]


def start_tags(page: str) -> list[tuple[str, list]]:
    """Every element a parser finds (script contents are text to it, as to a browser)."""
    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))
    Tags().feed(page)
    return found


def html_text(page: str) -> str:
    """The visible text of our sections below HiPlot."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.split('<main class="tr-main">', 1)[1]))


# --- the page as a file -------------------------------------------------------------------------


def test_a_pruned_search_ranks_importance_on_the_epoch_every_trial_reached(sqlite_url, tmp_path):
    """Two trials completed, ten were pruned: the importance uses all twelve at epoch 1 (the
    pruned ones' curves go to epoch 1 or 2), and says so; a later epoch's values are not used."""
    store = open_store(sqlite_url)
    study = make_study(store, "pruned")
    rng = random.Random(3)
    for i in range(12):
        params = {"retrieval.temperature": 10 ** rng.uniform(-3, 0), "training.learning_rate": 10 ** rng.uniform(-3, -1),
                  "negatives.strategy": rng.choice(["in_batch", "mns"])}
        q = quality(params["retrieval.temperature"])
        epochs = 4 if i < 2 else 1 + i % 2
        add_trial(store, study, params, epochs=curve(q, epochs), status=COMPLETED if i < 2 else PRUNED,
                  finals={OBJECTIVE: q} if i < 2 else {})
    result = report.write_report(store, "pruned", tmp_path / "r.html")
    assert [i.parameter for i in result.importance][0] == "retrieval.temperature", result.importance
    assert "12 completed and pruned trials, on the objective at epoch 1" in result.importance_note
    store.close()


def test_report_rows_types_and_escaping(sqlite_url, tmp_path):
    store = open_store(sqlite_url)
    _, numbers = build_study(store)
    result = report.write_report(store, STUDY, tmp_path / "r.html")
    page = result.path.read_text()

    rows = {d["uid"]: d["values"] for d in embedded_rows(page)}
    assert sorted(rows, key=int) == [str(n) for n in numbers] and result.trials == 7
    failed = rows[str(numbers[-1])]
    assert failed["status"] == "FAILED" and failed[OBJECTIVE] is None and failed["duration_s"] == 60.0
    assert failed["error"] == "‹/script›‹script›alert(1)‹/script›‹img src=x onerror=alert(2)›"
    done = rows[str(numbers[2])]
    assert done["retrieval.temperature"] == 0.03 and done["negatives.strategy"] == "in_batch"
    assert done[OBJECTIVE] == pytest.approx(quality(0.03), rel=1e-4) and done["worker"] == "w0"
    assert {"test_ndcg@10", "most_popular_test_recall@10", "started"} <= set(done)

    # standalone: nothing fetched from elsewhere; user text never markup, never a script end
    tags = start_tags(page)
    assert [t for t, _ in tags if t == "script"] == ["script", "script"]  # HiPlot's bundle and its setup
    external = r"\s*(https?:)?//"
    assert [(t, a) for t, a in tags if any(k in ("src", "href") and re.match(external, v or "") for k, v in a)] == []
    assert [(t, a) for t, a in tags if any(k.startswith("on") for k, _ in a)] == []
    for raw in (INJECTION, "<script>alert(3)", "<script>alert(4)", "onerror=alert(5)>"):
        assert raw not in page
    assert html_text(page).count(INJECTION) == 1  # shown once, as text, in the failed-trials table
    store.close()


def test_importance_ranks_the_one_parameter_the_objective_depends_on(sqlite_url, tmp_path, monkeypatch):
    store = open_store(sqlite_url)
    study = make_study(store, "synthetic/importance")
    rng = random.Random(7)
    for i in range(16):
        params = {"retrieval.temperature": 10 ** rng.uniform(-3, 0),
                  "training.learning_rate": 10 ** rng.uniform(-3, -0.5),
                  "negatives.strategy": rng.choice(["in_batch", "mns"])}
        q = quality(params["retrieval.temperature"]) + rng.gauss(0, 1e-4)
        add_trial(store, study, params, finals={OBJECTIVE: q})
        if i == 2:  # three completed trials: too few to rank, and said so
            early = report.write_report(store, "synthetic/importance", tmp_path / "early.html")
            assert early.importance == []
            assert "at least 4 completed trials with an objective (have 3)" in early.importance_note

    monkeypatch.chdir(tmp_path)
    result = report.write_report(store, "synthetic/importance")
    # not a plain slug: the slug plus a hash of the exact name (see test_hostile_store.py)
    assert result.path == Path("reports/synthetic_importance-0761fa9d26.html") and result.path.is_file()
    ranked = [i.parameter for i in result.importance]
    assert ranked[0] == "retrieval.temperature", result.importance
    assert set(ranked) == {"retrieval.temperature", "training.learning_rate", "negatives.strategy"}
    assert result.importance[0].score > 5 * max(result.importance[1].score, 0.01), result.importance
    assert "permutation importance" in result.importance_note and "16 completed trials" in result.importance_note
    lines = result.importance_lines()
    assert lines[0].startswith("retrieval.temperature ") and lines[-1] == f"({result.importance_note})"
    page = result.path.read_text()
    assert re.findall(r'class="tr-pname">([^<]+)<', page) == ranked
    store.close()


def test_unknown_study_is_a_one_line_store_error(sqlite_url, tmp_path):
    store = open_store(sqlite_url)
    make_study(store, "known")
    with pytest.raises(StoreError, match=r"no study named 'nope' \(studies: known\)"):
        report.write_report(store, "nope", tmp_path / "x.html")
    with pytest.raises(StoreError, match="no study named 'nope'"):
        report.serve_dashboard(sqlite_url, "nope", port=0)
    store.close()


def test_default_report_paths_are_unique_per_name_and_fit_a_file_name():
    names = ["temp", "Temp", "a'b\"c", "a;b;c", "a_b_c", "é" * 200, "ü" * 200, "x" * 200, "..", "../../etc/passwd",
             "synthetic/importance", "synthetic_importance"]
    paths = [report.default_path(name) for name in names]
    assert len(set(paths)) == len(names)  # a;b;c no longer overwrites a'b"c, nor Temp temp on macOS
    assert all(p.parent == Path("reports") and len(p.name.encode()) <= 255 and p.name.isascii() for p in paths)
    assert report.default_path("temp") == Path("reports/temp.html")  # plain names keep plain files
    assert report.default_path("a_b_c") == Path("reports/a_b_c.html")


def test_the_dashboard_refuses_ports_out_of_range_and_foreign_hosts(sqlite_url):
    from tuner.errors import ConfigError

    store = open_store(sqlite_url)
    make_study(store, "live")
    store.close()
    for port in (-1, 65536, True):
        with pytest.raises(ConfigError, match=r"--port: .* is not a TCP port; allowed: 1 to 65535, or 0"):
            report.serve_dashboard(sqlite_url, "live", port=port)
    dashboard = report.serve_dashboard(sqlite_url, "live", port=0)
    try:
        port = dashboard.server.server_port
        with pytest.raises(ConfigError, match=f"--port {port}: already in use on 127.0.0.1"):
            report.serve_dashboard(sqlite_url, "live", port=port)
        assert all(dashboard.answers_to(h.format(port)) for h in ("localhost:{}", "127.0.0.1:{}", "[::1]:{}"))
        foreign = (None, "", "evil.example", f"evil.example:{port}", f"localhost:{port + 1}", "localhost",
                   f"127.0.0.1.nip.io:{port}")
        assert not any(dashboard.answers_to(h) for h in foreign)
    finally:
        dashboard.shutdown()


def test_a_study_whose_space_no_longer_parses_still_reports_its_trials(sqlite_url, tmp_path):
    store = open_store(sqlite_url)
    study = create_or_get_study(store, name="old", space="parameters: {}\n", settings=StudySettings(
        SearchSettings(objective=OBJECTIVE, direction="min", oracle="random")))[0]
    for temperature in (0.01, 0.1):
        add_trial(store, study, {"retrieval.temperature": temperature, "model.user_features": "true"},
                  finals={OBJECTIVE: temperature})
    result = report.write_report(store, "old", tmp_path / "old.html")
    rows = [d["values"] for d in embedded_rows(result.path.read_text())]
    assert [r["retrieval.temperature"] for r in rows] == [0.01, 0.1] and rows[0]["model.user_features"] == "true"
    assert "the study's space could not be read (space: parameters:" in result.importance_note
    store.close()


# --- the dashboard over HTTP ----------------------------------------------------------------------


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_dashboard_serves_the_report_and_follows_new_trials(sqlite_url):
    store = open_store(sqlite_url)
    study = make_study(store, "live")
    dashboard = report.serve_dashboard(sqlite_url, "live", port=0, refresh_s=0.5).start()
    try:
        first = get(dashboard.url)
        assert "No trials yet" in first and 'fetch("token"' in first
        token = json.loads(get(dashboard.url + "token"))["token"]
        assert json.loads(get(dashboard.url + "token"))["token"] == token  # unchanged study, same token

        n1 = add_trial(store, study, {"retrieval.temperature": 0.05}, curve(0.08), finals(0.08))
        assert json.loads(get(dashboard.url + "token"))["token"] != token
        assert [d["uid"] for d in embedded_rows(get(dashboard.url))] == [str(n1)]

        n2 = add_trial(store, study, {"retrieval.temperature": 0.5}, status=FAILED, error="boom")
        page = get(dashboard.url)
        assert [d["uid"] for d in embedded_rows(page)] == [str(n1), str(n2)] and "boom" in page
        with pytest.raises(urllib.error.HTTPError, match="404"):
            get(dashboard.url + "elsewhere")
    finally:
        dashboard.shutdown()
    with pytest.raises(urllib.error.URLError):
        get(dashboard.url)
    store.close()


# --- in a real browser ------------------------------------------------------------------------------

PLOT_STATE = """
var el = document.querySelector('.pplot-root');
if (!el) return null;
var key = Object.keys(el).find(function (k) { return k.startsWith('__reactFiber'); });
var f = el[key];
while (f && !(f.stateNode && f.stateNode.props && f.stateNode.props.rows_selected)) f = f.return;
if (!f || !f.stateNode.state.dimensions.length) return null;
var plot = f.stateNode, p = plot.props, types = {}, colors = {};
Object.keys(p.params_def).forEach(function (k) { types[k] = p.params_def[k].type; });
p.rows_selected.forEach(function (r) { colors[r.uid] = p.get_color_for_row(r, 1); });
var canvas = plot.foreground_ref.current, painted = 0;
var px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
for (var i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
return {uids: p.rows_selected.map(function (r) { return String(r.uid); }), axes: plot.state.dimensions,
        colorby: p.colorby, types: types, colors: colors, painted: painted,
        tableRows: document.querySelectorAll('.sample-rows-table tbody tr').length};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"no headless browser: {', '.join(missing)} missing (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("TUNER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TUNER_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    # Any alert() a page runs is recorded instead of shown: the injection checks read the record.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": "window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };"})
    yield driver
    driver.quit()


def plot_state(driver, trials: int, timeout: float = 20.0) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        state = d.execute_script(PLOT_STATE)
        return state if state and len(state["uids"]) == trials and state["painted"] and state["tableRows"] else None
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(ready)


def save_whole_page(driver, trials: int, name: str) -> None:
    """A screenshot of the whole page in ARTIFACTS/name, the plot drawn."""
    for _ in range(2):  # a window as tall as the page (plus the window's own frame); the layout settles
        driver.set_window_size(1400, driver.execute_script(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"))
        plot_state(driver, trials)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))
    driver.set_window_size(1400, 1000)


def test_report_in_headless_chromium(browser, sqlite_url, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    store = open_store(sqlite_url)
    _, numbers = build_study(store)
    result = report.write_report(store, STUDY, tmp_path / "report.html")
    browser.get_log("browser")  # start from an empty console
    browser.get(result.path.resolve().as_uri())
    state = plot_state(browser, len(numbers))

    # one line per trial, the objective first and colouring, log parameters on log axes
    assert sorted(state["uids"], key=int) == [str(n) for n in numbers] and state["tableRows"] == len(numbers)
    assert state["axes"][0] == OBJECTIVE and state["colorby"] == OBJECTIVE
    assert {"retrieval.temperature", "training.learning_rate", "negatives.strategy", "status"} <= set(state["axes"])
    assert state["types"]["retrieval.temperature"] == "numericlog" == state["types"]["training.learning_rate"]
    assert state["types"]["negatives.strategy"] == "categorical" and state["types"][OBJECTIVE] == "numeric"
    failed_color = state["colors"].pop(str(numbers[-1]))
    assert failed_color not in state["colors"].values() and len(set(state["colors"].values())) == 6
    assert state["painted"] > 5000  # lines were drawn on the plot's canvas

    page = browser.execute_script("""return {
        title: document.title, alerts: window.__alerts, scripts: document.scripts.length,
        handlers: document.querySelectorAll('[onerror],[onload]').length,
        curves: document.querySelectorAll('svg.tr-chart polyline').length,
        importance: Array.from(document.querySelectorAll('.tr-imp .tr-pname')).map(e => e.textContent),
        errors: Array.from(document.querySelectorAll('.tr-err')).map(e => e.textContent),
        fetched: performance.getEntriesByType('resource').map(e => e.name).filter(n => !/^(data|blob):/.test(n)),
        strokes: Array.from(document.querySelectorAll('svg.tr-chart g')).map(g => [
            g.querySelector('title').textContent.match(/^trial (\\d+)/)[1],
            g.querySelector('polyline').getAttribute('stroke')])}""")
    assert page["title"] == f"{STUDY} · tuner report"
    assert page["alerts"] == [] and page["scripts"] == 2 and page["handlers"] == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert page["errors"] == [INJECTION]  # shown verbatim, as text
    assert page["curves"] == 2 * len(numbers)  # loss and val_recall@10 of every trial
    hiplot_rgb = {uid: re.sub(r"rgba\((\d+), (\d+), (\d+), 1\)", r"rgb(\1,\2,\3)", color)
                  for uid, color in state["colors"].items()}
    assert {uid: c for uid, c in page["strokes"] if uid in hiplot_rgb} == hiplot_rgb  # curves coloured as the plot
    assert {c for uid, c in page["strokes"] if uid == str(numbers[-1])} == {report.MISSING_COLOR}
    assert page["importance"] == [i.parameter for i in result.importance] and len(page["importance"]) == 3
    assert page["fetched"] == []
    console = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert console == []

    save_whole_page(browser, len(numbers), "report.png")
    store.close()


def test_dashboard_page_reloads_itself_when_a_trial_ends(browser, sqlite_url):
    store = open_store(sqlite_url)
    study = make_study(store, "live")
    for temperature in (0.05, 0.01):  # HiPlot hides axes with a single value: two trials to draw lines
        add_trial(store, study, {"retrieval.temperature": temperature}, curve(0.08), finals(quality(temperature)))
    dashboard = report.serve_dashboard(sqlite_url, "live", port=0, refresh_s=0.5).start()
    try:
        browser.get(dashboard.url)
        plot_state(browser, 2)
        add_trial(store, study, {"retrieval.temperature": 0.3}, curve(0.06), finals(0.06))
        assert sorted(plot_state(browser, 3)["uids"]) == ["1", "2", "3"]
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        dashboard.shutdown()
    store.close()


# --- baselines as reference values ----------------------------------------------------------------

REFERENCE_VAL = {"most_popular": ("MostPopular", 0.05), "ease": ("EASE", 0.0955), "als": ("ALS", 0.0973)}


def baseline_finals(scale: float = 1.0, without=()) -> dict:
    """A trial's baseline metrics as `train.flat_metrics` names them; `scale`: another split's values."""
    metrics = {}
    for prefix, (_, value) in REFERENCE_VAL.items():
        if prefix not in without:
            value *= scale
            metrics.update({f"{prefix}_val_recall@10": value, f"{prefix}_test_recall@10": 0.9 * value,
                            f"{prefix}_val_recall@100": 3 * value, f"{prefix}_test_ndcg@10": 0.5 * value})
    return metrics


def build_study_with_baselines(store, name: str) -> tuple[list[int], int]:
    """Five completed trials (and a failed one) measured beside MostPopular, EASE and ALS on one split."""
    study = make_study(store, name)
    numbers = []
    for i, temperature in enumerate([0.003, 0.02, 0.07, 0.3, 0.9]):
        q = quality(temperature)
        numbers.append(add_trial(store, study, {"retrieval.temperature": temperature, "negatives.strategy": "mns"},
                                 curve(q), {**finals(q), **baseline_finals()}, worker=f"w{i % 2}"))
    numbers.append(add_trial(store, study, {"retrieval.temperature": 0.5}, curve(0.02, epochs=2), status=FAILED,
                             error="diverged"))
    return numbers, numbers[2]  # the best: temperature 0.07, nearest the peak at 0.05


def charts(page: str) -> dict[str, str]:
    """Each learning-curve chart's SVG by its metric."""
    return {html.unescape(re.search(r'class="tr-ct">([^<]+)<', svg).group(1)): svg
            for svg in re.findall(r'<svg class="tr-chart".*?</svg>', page)}


def reference_lines(svg: str) -> dict[str, float]:
    """label -> the y pixel of its dashed line."""
    return {html.unescape(title).split(":")[0]: float(y) for y, title in
            re.findall(r'<line x1="[\d.]+" x2="[\d.]+" y1="([\d.]+)" y2="\1" class="tr-ref"><title>([^<]+)</title>', svg)}


def value_at(svg: str, y: float) -> float:
    """The value the chart's y axis gives pixel `y`: linear through its first and last grid lines."""
    ticks = [(float(y), float(v)) for y, v in re.findall(r'class="tr-grid"/><text x="[\d.]+" y="([\d.]+)" '
                                                          r'text-anchor="end">([-\d.e]+)</text>', svg)]
    (ya, va), (yb, vb) = ticks[0], ticks[-1]
    ya, yb = ya - 4, yb - 4  # a tick's text sits 4 px below its grid line
    return va + (y - ya) * (vb - va) / (yb - ya)


def header_text(page: str) -> str:
    """The visible text of our header above HiPlot (the best trial, the baselines' table)."""
    return html.unescape(re.sub(r"<[^>]+>", "", re.search(r'<header class="tr-head">.*?</header>', page).group(0)))


def reference_table(page: str) -> list[list[str]]:
    table = re.search(r'<table class="tr-refs">(.*?)</table>', page).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table)]


def test_the_report_draws_the_baselines_beside_the_trials(sqlite_url, tmp_path, capsys):
    from tuner import cli
    from tuner.report.charts import fmt

    store = open_store(sqlite_url)
    numbers, best = build_study_with_baselines(store, "baselines")
    q = quality(0.07)
    page = report.write_report(store, "baselines", tmp_path / "b.html").path.read_text()

    # a dashed line per baseline in the objective's chart, at its value on the chart's own axis
    drawn = charts(page)
    lines = reference_lines(drawn[OBJECTIVE])
    assert list(lines) == ["MostPopular", "EASE", "ALS"]
    for prefix, (label, value) in REFERENCE_VAL.items():
        assert value_at(drawn[OBJECTIVE], lines[label]) == pytest.approx(value, abs=2e-4), label
    assert lines["ALS"] < lines["EASE"] < lines["MostPopular"]  # higher values higher up
    labels = re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="end" class="tr-reflabel">([^<]+)</text>',
                        drawn[OBJECTIVE])
    assert sorted(text for _, text in labels) == ["ALS 0.0973", "EASE 0.0955", "MostPopular 0.05"]
    ys = sorted(float(y) for y, _ in labels)
    assert all(b - a >= 13 for a, b in zip(ys, ys[1:]))  # 0.0955 and 0.0973 are close: their labels do not overlap
    assert "tr-ref" not in drawn["loss"]  # the baselines have no training loss
    assert "MostPopular, EASE, ALS: their final value" in html_text(page)

    # beside the best trial: its objective and test counterpart, each baseline's, best ÷ the strongest
    assert reference_table(page) == [
        ["", OBJECTIVE, "test_recall@10"],
        [f"best (trial {best})", fmt(q), fmt(0.9 * q)],
        ["MostPopular", "0.05", "0.045"], ["EASE", "0.0955", "0.08595"], ["ALS", "0.0973", "0.08757"]]
    assert (f"best ÷ ALS, the strongest baseline: {q / 0.0973:.2f}× on val, {0.9 * q / (0.9 * 0.0973):.2f}× on test"
            in header_text(page))
    assert "disagree" not in page
    rows = {d["uid"]: d["values"] for d in embedded_rows(page)}
    assert rows[str(best)]["als_test_ndcg@10"] == pytest.approx(0.5 * 0.0973)  # HiPlot's table has them too

    assert cli.main(["status", "--study", "baselines", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (f"  baselines' {OBJECTIVE}: MostPopular 0.0500, EASE 0.0955, ALS 0.0973; "
                       f"best trial {q / 0.0973:.2f}× ALS")
    assert len(out) == 2 + len(numbers) + 1  # heading, column names, the trials, the baselines
    store.close()


def test_without_baselines_the_report_and_status_add_nothing(sqlite_url, tmp_path, capsys):
    from tuner import cli

    store = open_store(sqlite_url)
    study = make_study(store, "plain")
    for temperature in (0.01, 0.1):
        q = quality(temperature)
        add_trial(store, study, {"retrieval.temperature": temperature},
                  curve(q), {OBJECTIVE: q, "test_recall@10": q})  # a custom trial function's metrics
    page = report.write_report(store, "plain", tmp_path / "p.html").path.read_text()
    assert 'class="tr-ref">' not in page and 'class="tr-reflabel"' not in page
    assert '<table class="tr-refs">' not in page and "strongest baseline" not in page
    assert cli.main(["status", "--study", "plain", "--storage", sqlite_url]) == 0
    assert "baselines" not in capsys.readouterr().out
    store.close()


def test_trials_that_disagree_on_the_baselines_show_the_best_trials_and_say_so(sqlite_url, tmp_path):
    from tuner.report.data import read_study

    store = open_store(sqlite_url)
    # a worker without the ALS extra: its trials lack ALS, which is no disagreement
    study = make_study(store, "one-split")
    full = add_trial(store, study, {"retrieval.temperature": 0.01}, finals={OBJECTIVE: 0.06, **baseline_finals()})
    best = add_trial(store, study, {"retrieval.temperature": 0.05},
                     finals={OBJECTIVE: 0.08, **baseline_finals(without=("als",))})
    refs = read_study(store, "one-split").references
    assert refs.trials == {"MostPopular": best, "EASE": best, "ALS": full} and refs.note == ""
    assert refs.of(OBJECTIVE) == {label: value for label, value in REFERENCE_VAL.values()}

    # a searched split: each trial measured its own baselines; the best trial's split is shown
    study = make_study(store, "two-splits")
    first = add_trial(store, study, {"split.seed": 1}, finals={OBJECTIVE: 0.06, **baseline_finals(1.0)})
    best = add_trial(store, study, {"split.seed": 2}, finals={OBJECTIVE: 0.08, **baseline_finals(1.2)})
    latest = add_trial(store, study, {"split.seed": 1}, finals={OBJECTIVE: 0.07, **baseline_finals(1.0)})
    add_trial(store, study, {"split.seed": 3}, finals={OBJECTIVE: 0.09, **baseline_finals(2.0)}, status=FAILED,
              error="lost")  # not completed: not a source
    refs = read_study(store, "two-splits").references
    assert set(refs.trials.values()) == {best}
    assert refs.of(OBJECTIVE) == pytest.approx({label: 1.2 * value for label, value in REFERENCE_VAL.values()})
    assert refs.note == (f"the trials disagree on the baselines (trial(s) {first}, {latest} hold other values: "
                         f"does the space search the data or the split?); shown: the best trial's ({best})")
    page = report.write_report(store, "two-splits", tmp_path / "two.html").path.read_text()
    assert f"note: {refs.note}" in header_text(page)
    assert f"best ÷ ALS, the strongest baseline: {0.08 / (1.2 * 0.0973):.2f}× on val" in header_text(page)
    store.close()


def test_flat_metrics_names_every_baseline_that_ran():
    from tuner import train

    part = {"recall@10": 0.2, "ndcg@10": float("nan")}
    result = {"val": part, "test": part, "most_popular": {"val": part, "test": {}},
              "baselines": {"ease": {"chosen": {"lambda": 50}, "val": {"recall@10": 0.3}, "test": {"recall@10": 0.25},
                                     "grid": []},
                            "als": {"skipped": "the optional extra is not installed: pip install tuner[baselines]"}}}
    assert train.flat_metrics(result) == {"val_recall@10": 0.2, "test_recall@10": 0.2,
                                          "most_popular_val_recall@10": 0.2,
                                          "ease_val_recall@10": 0.3, "ease_test_recall@10": 0.25}


def test_a_real_search_stores_its_baselines_and_the_report_draws_them(tmp_path):
    """`tuner search` on small synthetic data, its split searched: each split's EASE and ALS are
    computed once, every trial stores its split's, and report and status show the best trial's."""
    import sqlite3
    import subprocess
    import sys

    try:
        import implicit  # noqa: F401
        expected = ["most_popular", "ease", "als", "recent_popularity", "transitions"]
    except ImportError:  # without the extra ALS is skipped and stores nothing
        expected = ["most_popular", "ease", "recent_popularity", "transitions"]
    space = {"seed": 42, "dataset": {"name": "synthetic", "num_users": 300, "num_items": 120, "num_interactions": 6000,
                                     "num_clusters": 6, "cache_dir": str(tmp_path / "cache")},
             "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42},
             "model": {"embedding_dim": 8, "normalize": True}, "training": {"epochs": 2, "batch_size": 256},
             "evaluation": {"ks": [10], "monitor": "recall@10"},
             "parameters": {"split.seed": {"values": [1, 2]}, "retrieval.temperature": {"values": [0.05, 0.2]}},
             "search": {"oracle": "grid", "objective": OBJECTIVE, "direction": "max", "study": "refs"}}
    (tmp_path / "refs.yaml").write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path / 'refs.db'}"

    def tuner(*args):
        done = subprocess.run([sys.executable, "-m", "tuner.cli", *args, "--storage", url], capture_output=True,
                              text=True, cwd=tmp_path, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    tuner("search", "--space", "refs.yaml")
    with sqlite3.connect(tmp_path / "refs.db") as conn:
        seeds = {n: json.loads(p)["split.seed"] for n, p in conn.execute("SELECT number, params FROM trials")}
        stored = {n: {} for n in seeds}
        for n, name, value in conn.execute("SELECT t.number, m.name, m.value FROM metrics m JOIN trials t "
                                           "ON t.id = m.trial_id WHERE m.epoch IS NULL"):
            stored[n][name] = value
    assert sorted(seeds.values()) == [1, 1, 2, 2]

    def baselines_of(metrics, prefix):
        return {k[len(prefix) + 1:]: v for k, v in metrics.items() if k.startswith(prefix + "_")}

    # every trial holds its split's baselines exactly as they were computed (and cached, once per split)
    cached = {}
    for path in (tmp_path / "cache" / "baselines").glob("*.json"):
        entry = json.loads(path.read_text())
        cached.setdefault(path.name.split("-")[0], []).append(
            {f"{part}_{k}": v for part in ("val", "test") for k, v in entry[part].items() if math.isfinite(v)})
    assert sorted(cached) == sorted(expected[1:]) and all(len(c) == 2 for c in cached.values())  # two splits
    for n, metrics in stored.items():
        assert {k.split("_val_")[0] for k in metrics if "_val_" in k and not k.startswith("val_")} == set(expected)
        for prefix in expected[1:]:
            assert baselines_of(metrics, prefix) in cached[prefix], (n, prefix)
    by_seed = {seed: [baselines_of(stored[n], "ease") for n in seeds if seeds[n] == seed] for seed in (1, 2)}
    assert all(a == b for a, b in by_seed.values()) and by_seed[1][0] != by_seed[2][0]

    best = max(stored, key=lambda n: stored[n][OBJECTIVE])
    others = sorted(n for n in seeds if seeds[n] != seeds[best])
    tuner("report", "--study", "refs")
    page = (tmp_path / "reports" / "refs.html").read_text()
    lines = reference_lines(charts(page)[OBJECTIVE])
    labels = {"most_popular": "MostPopular", "ease": "EASE", "als": "ALS", "recent_popularity": "RecentPopularity",
              "transitions": "Transitions"}
    assert list(lines) == [labels[p] for p in expected]
    for prefix in expected:
        value = stored[best][f"{prefix}_{OBJECTIVE}"]
        assert value_at(charts(page)[OBJECTIVE], lines[labels[prefix]]) == pytest.approx(value, abs=1e-3)
        assert f"{labels[prefix]} {value:.4g}" in html_text(page)
    assert (f"trial(s) {', '.join(map(str, others))} hold other values: does the space search the data or the split?);"
            f" shown: the best trial's ({best})") in header_text(page)
    status = tuner("status", "--study", "refs").splitlines()
    assert status[-1].startswith(f"  baselines' {OBJECTIVE}: MostPopular {stored[best][f'most_popular_{OBJECTIVE}']:.4f}")


def test_reference_lines_and_table_render_in_headless_chromium(browser, sqlite_url, tmp_path):
    store = open_store(sqlite_url)
    numbers, best = build_study_with_baselines(store, "baselines")
    result = report.write_report(store, "baselines", tmp_path / "baselines.html")
    browser.get_log("browser")
    browser.get(result.path.resolve().as_uri())
    plot_state(browser, len(numbers))  # HiPlot still draws every trial

    drawn = browser.execute_script("""
        var box = function (e) { var r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        var chart = Array.from(document.querySelectorAll('svg.tr-chart'))
            .find(function (s) { return s.querySelector('.tr-ct').textContent === arguments[0]; }, null);
        return {
          chart: box(chart),
          lines: Array.from(chart.querySelectorAll('line.tr-ref')).map(function (l) {
            var s = getComputedStyle(l); return [l.querySelector('title').textContent, box(l), s.strokeDasharray]; }),
          labels: Array.from(chart.querySelectorAll('text.tr-reflabel')).map(function (t) {
            return [t.textContent, box(t)]; }),
          otherLines: document.querySelectorAll('svg.tr-chart line.tr-ref').length,
          polylines: document.querySelectorAll('svg.tr-chart polyline').length,
          table: Array.from(document.querySelectorAll('.tr-head .tr-refs tr')).map(function (r) {
            return Array.from(r.cells).map(function (c) { return c.textContent; }); }),
          tableBox: box(document.querySelector('.tr-head .tr-refs')), head: box(document.querySelector('.tr-head'))};
    """.replace("arguments[0]", json.dumps(OBJECTIVE)))
    left, top, right, bottom = drawn["chart"]
    assert [title.split(":")[0] for title, _, _ in drawn["lines"]] == ["MostPopular", "EASE", "ALS"]
    for title, (x0, y0, x1, y1), dash in drawn["lines"]:
        assert left <= x0 < x1 <= right and top < y0 <= y1 < bottom and x1 - x0 > 100, title  # drawn across
        assert dash not in ("", "none"), title  # dashed
    boxes = sorted(b for _, b in drawn["labels"])
    assert sorted(t for t, _ in drawn["labels"]) == ["ALS 0.0973", "EASE 0.0955", "MostPopular 0.05"]
    assert all(left <= b[0] and b[2] <= right and top <= b[1] and b[3] <= bottom for b in boxes)
    by_top = sorted(boxes, key=lambda b: b[1])
    assert all(a[3] <= b[1] + 1 for a, b in zip(by_top, by_top[1:]))  # no label covers another
    assert drawn["otherLines"] == 3 * 1  # curves of val_recall@10 and loss: only the validation chart has them
    assert drawn["polylines"] == 2 * len(numbers)  # every trial's curves, as without baselines
    assert [row[0] for row in drawn["table"]] == ["", f"best (trial {best})", "MostPopular", "EASE", "ALS"]
    t_left, t_top, t_right, t_bottom = drawn["tableBox"]
    h_left, h_top, h_right, h_bottom = drawn["head"]
    assert h_left <= t_left < t_right <= h_right and h_top <= t_top < t_bottom <= h_bottom  # inside the header
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []

    save_whole_page(browser, len(numbers), "report-baselines.png")
    store.close()
