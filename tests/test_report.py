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
from tuner.store import COMPLETED, FAILED, RUNNING, StoreError, api, open_store

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
    return api.create_or_get_study(store, name=name, space=space_text(), objective=OBJECTIVE, direction="max",
                                   oracle="random", settings={"max_trials": 20, "seed": 1})[0]


def add_trial(store, study, params, epochs=(), finals=None, status=COMPLETED, error=None, seconds=60.0,
              worker="w0"):
    """A trial as a worker writes it: RUNNING under the study lock, per-epoch metrics, then its end."""
    started = api.utcnow() - timedelta(seconds=seconds)
    with api.study_lock(store, study.id) as (conn, _):
        trial_id, number = api.insert_trial(
            conn, study.id, kt_trial_id=f"kt-{random.random()}", status=RUNNING, params=json.dumps(params),
            worker=worker, host="h", pid=1, started=started, heartbeat=started, retries=0, kt_state="{}", kt_version=1)
    for epoch, values in enumerate(epochs, start=1):
        assert api.report_epoch(store, trial_id, epoch, values)
    with store.write() as conn:
        api.add_metrics(conn, trial_id, None, finals or {})
        api.update_trial(conn, trial_id, status=status, error=error, ended=started + timedelta(seconds=seconds),
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
    assert result.path == Path("reports/synthetic_importance.html") and result.path.is_file()
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


def test_a_study_whose_space_no_longer_parses_still_reports_its_trials(sqlite_url, tmp_path):
    store = open_store(sqlite_url)
    study = api.create_or_get_study(store, name="old", space="parameters: {}\n", objective=OBJECTIVE,
                                    direction="min", oracle="random", settings={})[0]
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

    for _ in range(2):  # a window as tall as the page (plus the window's own frame); the layout settles
        browser.set_window_size(1400, browser.execute_script(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"))
        plot_state(browser, len(numbers))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    browser.set_window_size(1400, 1000)
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
