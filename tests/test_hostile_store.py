"""Hostile stores, outputs, ports, study names and dashboard requests, through the real `tuner`
command: each refusal is exit code 2 and one `tuner: error:` line naming the URL, flag or key and
what is allowed, no traceback, and the store given is byte-for-byte what it was (SQLite: every
file in its folder hashed; PostgreSQL: every table's rows read back through reflection).
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
import throwaway_postgres
import yaml

from tuner.space import SearchSettings, StudySettings
from tuner.store import COMPLETED, RUNNING, STUDY_NAME_RULE, api, create_or_get_study, open_store

ENV = {k: v for k, v in os.environ.items() if k != "TUNER_STORAGE"} | {"PYTHONWARNINGS": "ignore"}
SEARCH = ["search", "--space", "temp", "--max-trials", "1", "--workers", "1"]  # bounded, should a refusal fail
READ_COMMANDS = {  # every command that opens a store, with a study "s" where one is needed
    "status": ["status"], "studies": ["studies"], "best": ["best", "--study", "s"],
    "report": ["report", "--study", "s"], "dashboard": ["dashboard", "--study", "s", "--port", "0"],
    "worker": ["worker", "--study", "s"], "search": SEARCH,
}


def tuner(*args, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.cli", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The one error line of a refusal; it holds every needle."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tuner: error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def folder_snapshot(folder: Path) -> dict:
    """Every file in the folder (a SQLite database and any -wal/-shm/-journal beside it), hashed."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def pg_snapshot(url: str) -> dict:
    """Every table and view of the database with all its rows, read through reflection."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            found = {"views": sorted(inspector.get_view_names())}
            for name in sorted(inspector.get_table_names()):
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                found[name] = sorted(repr(tuple(row)) for row in conn.execute(sa.select(table)))
        return found
    finally:
        engine.dispose()


def temp_space_text(**search) -> str:
    data = yaml.safe_load((resources.files("tuner") / "spaces" / "temp.yaml").read_text())
    data["search"].update(search)
    return yaml.safe_dump(data, sort_keys=False)


def add_study(url: str, name: str = "s") -> None:
    """A study with one completed trial and its final metrics, as workers write them."""
    store = open_store(url)
    study = create_or_get_study(store, name=name, space=temp_space_text(), settings=StudySettings(SearchSettings(
        objective="val_recall@10", direction="max", oracle="random", max_trials=2, seed=1)))[0]
    now = api.utcnow()
    with api.study_lock(store, study.id) as locked:
        trial_id, _ = locked.insert_trial(kt_trial_id="kt1", status=RUNNING,
                                          params=json.dumps({"retrieval.temperature": 0.1}), worker="w0", host="h",
                                          pid=1, started=now, heartbeat=now, retries=0, kt_state="{}", kt_version=1)
        locked.add_metrics(trial_id, None, {"val_recall@10": 0.15, "test_recall@10": 0.14})
        locked.update_trial(trial_id, status=COMPLETED, objective=0.15, ended=now)
    store.close()


@pytest.fixture
def work(tmp_path) -> Path:
    """The command's working directory, apart from the store's folder."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def db_dir(tmp_path) -> Path:
    path = tmp_path / "db"
    path.mkdir()
    return path


@pytest.fixture
def tuner_store(db_dir) -> str:
    """A SQLite tuner store with study 's' (one completed trial)."""
    url = f"sqlite:///{db_dir / 'tuner.db'}"
    add_study(url)
    return url


@pytest.fixture
def pg_tuner_store(postgres_url) -> str:
    add_study(postgres_url)
    return postgres_url


# --- 1. stores that are not ours ------------------------------------------------------------------

FOREIGN_SQL = [  # an application's database: its own `trials` table among others
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL)",
    "INSERT INTO accounts (id, email) VALUES (1, 'a@example.org'), (2, 'b@example.org')",
    "CREATE TABLE trials (id INTEGER PRIMARY KEY, drug TEXT, phase INTEGER)",
    "INSERT INTO trials (id, drug, phase) VALUES (1, 'x', 3)",
]


def make_foreign(url: str, statements=FOREIGN_SQL) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.mark.parametrize("command", READ_COMMANDS, ids=[f"sqlite-{c}" for c in READ_COMMANDS])
def test_a_sqlite_database_of_another_application_is_refused_and_left_untouched(command, db_dir, work):
    url = f"sqlite:///{db_dir / 'app.db'}"
    make_foreign(url)
    before = folder_snapshot(db_dir)
    refused(tuner(*READ_COMMANDS[command], "--storage", url, cwd=work),
            url, "not a tuner store", "accounts, trials", "give an empty database or a new SQLite file")
    assert folder_snapshot(db_dir) == before


@pytest.mark.postgres
@pytest.mark.parametrize("command", READ_COMMANDS, ids=[f"postgresql-{c}" for c in READ_COMMANDS])
def test_a_postgresql_database_of_another_application_is_refused_and_left_untouched(command, postgres_url, work):
    make_foreign(postgres_url)
    before = pg_snapshot(postgres_url)
    refused(tuner(*READ_COMMANDS[command], "--storage", postgres_url, cwd=work),
            sa.engine.make_url(postgres_url).render_as_string(hide_password=True), "not a tuner store",
            "accounts, trials")
    assert pg_snapshot(postgres_url) == before


@pytest.mark.parametrize("statements, command, expected", [
    (["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)", "INSERT INTO meta VALUES ('owner', 'app')"],
     "status", "(meta)"),
    (["CREATE TABLE meta (a INTEGER, b INTEGER)", "INSERT INTO meta VALUES (1, 2)"], "search", "(meta)"),
    (["CREATE TABLE t (x INTEGER)", "CREATE VIEW v AS SELECT x FROM t"], "report", "(t, v)"),
    ([f"CREATE TABLE t{i} (x INTEGER)" for i in range(8)], "studies", "t0, t1, t2, t3, t4 and 3 more"),
], ids=["meta-without-version", "meta-other-columns", "a-view", "many-tables"])
def test_other_sqlite_schemas_are_refused_too(statements, command, expected, db_dir, work):
    url = f"sqlite:///{db_dir / 'app.db'}"
    make_foreign(url, statements)
    before = folder_snapshot(db_dir)
    refused(tuner(*READ_COMMANDS[command], "--storage", url, cwd=work), url, "not a tuner store", expected)
    assert folder_snapshot(db_dir) == before


@pytest.mark.parametrize("command", ["status", "search"])
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(command, db_dir, work):
    path = db_dir / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    before = folder_snapshot(db_dir)
    refused(tuner(*READ_COMMANDS[command], "--storage", f"sqlite:///{path}", cwd=work),
            f"sqlite:///{path}", "file is not a database")
    assert folder_snapshot(db_dir) == before


@pytest.mark.parametrize("command", ["status", "studies", "report"])
def test_reading_commands_create_no_store_where_there_is_none(command, db_dir, work):
    url = f"sqlite:///{db_dir / 'missing.db'}"
    refused(tuner(*READ_COMMANDS[command], "--storage", url, cwd=work),
            url, "does not exist", "`tuner search` creates one")
    assert list(db_dir.iterdir()) == []


@pytest.mark.postgres
def test_reading_commands_create_no_tables_in_an_empty_postgresql_database(postgres_url, work):
    refused(tuner("status", "--storage", postgres_url, cwd=work), "no tuner store there yet", "`tuner search`")
    assert pg_snapshot(postgres_url) == {"views": []}


HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # readers of a WAL database wait only for this
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("command", ["status", "best", "report"])
def test_a_locked_sqlite_store_is_one_line_naming_the_process_that_holds_it(command, tuner_store, db_dir, work):
    path = sa.engine.make_url(tuner_store).database
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = folder_snapshot(db_dir)
        started = time.monotonic()
        refused(tuner(*READ_COMMANDS[command], "--storage", tuner_store, cwd=work),
                tuner_store, "database is locked", "after waiting 5 s", f"open by pid {holder.pid} (")
        assert time.monotonic() - started < 30  # 5 s of waiting, not SQLite writers' 30
        assert folder_snapshot(db_dir) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("url, command", [("sqlite://", "status"), ("sqlite:///:memory:", "studies"),
                                          ("sqlite://", "search")])
def test_an_in_memory_sqlite_store_is_refused_with_the_reason(url, command, work):
    refused(tuner(*READ_COMMANDS[command], "--storage", url, cwd=work),
            "in memory vanishes when the command ends and workers cannot share it", "use a file, e.g. sqlite:///")


BAD_URLS = [  # (URL, what the one line says); every password here is s3cret and must not be shown
    ("postgresql://alice:s3cret@db.example:notaport/tuner", "not a database URL (--storage or TUNER_STORAGE); use "
                                                            "sqlite:///FILE or postgresql+psycopg://"),
    ("not a url", "not a database URL"),
    ("nosuchdb://alice:s3cret@host/x", "unknown database or driver 'nosuchdb'"),
    ("postgresql+nosuchdriver://alice:s3cret@host/x", "unknown database or driver 'postgresql+nosuchdriver'"),
    ("mysql://alice:s3cret@host/x", "the driver of 'mysql' is not installed (missing Python module 'MySQLdb')"),
    ("postgresql+psycopg://alice:s3cret@127.0.0.1:1/tuner", "Connection refused"),
    ("postgresql+psycopg://alice:s3cret@nosuchhost.invalid/tuner", "nosuchhost.invalid"),
]


@pytest.mark.parametrize("url, expected", BAD_URLS, ids=["bad-port", "no-url", "unknown-database",
                                                         "unknown-driver", "driver-missing", "refused-port",
                                                         "unknown-host"])
def test_bad_or_unreachable_urls_are_one_line_with_the_password_masked(url, expected, work):
    result = tuner("status", "--storage", url, cwd=work)
    line = refused(result, expected, ": cannot open the store: ")
    assert "s3cret" not in result.stderr + result.stdout
    assert line.startswith(f"tuner: error: {url.replace('s3cret', '***')}: ")


def test_a_bad_url_from_tuner_storage_is_masked_too(work):
    url = "postgresql://alice:s3cret@db.example:notaport/tuner"
    result = tuner("studies", cwd=work, env={**ENV, "TUNER_STORAGE": url})
    refused(result, "postgresql://alice:***@db.example:notaport/tuner", "TUNER_STORAGE")
    assert "s3cret" not in result.stderr


@pytest.fixture(scope="module")
def password_server(postgres_server):
    """A second throwaway server that checks passwords (the session's, whose fixture finds the
    binaries or skips, trusts loopback)."""
    with throwaway_postgres.temporary_server(password="right-pw") as url:
        yield url


@pytest.mark.postgres
def test_a_wrong_postgresql_password_is_one_line_and_not_shown(password_server, work):
    good = throwaway_postgres.create_database(password_server)
    add_study(good)
    before = pg_snapshot(good)
    wrong = sa.engine.make_url(good).set(password="s3cret")
    result = tuner("report", "--study", "s", "--storage", wrong.render_as_string(hide_password=False), cwd=work)
    refused(result, wrong.render_as_string(hide_password=True), "password authentication failed")
    assert "s3cret" not in result.stderr and "right-pw" not in result.stderr
    assert pg_snapshot(good) == before


@pytest.mark.postgres
def test_an_unknown_postgresql_database_is_one_line(postgres_server, work):
    url = sa.engine.make_url(postgres_server).set(database="nosuchdb", password="s3cret")
    result = tuner("studies", "--storage", url.render_as_string(hide_password=False), cwd=work)
    refused(result, url.render_as_string(hide_password=True), 'database "nosuchdb" does not exist')
    assert "s3cret" not in result.stderr


def test_a_directory_or_a_missing_folder_as_sqlite_store(db_dir, work):
    refused(tuner("status", "--storage", f"sqlite:///{db_dir}", cwd=work), f"{db_dir} is a directory")
    url = f"sqlite:///{db_dir / 'no' / 'such' / 't.db'}"
    refused(tuner(*SEARCH, "--storage", url, cwd=work), url, f"the folder {db_dir / 'no' / 'such'} does not exist")
    assert list(db_dir.iterdir()) == []


# --- 2. outputs and ports -------------------------------------------------------------------------


@pytest.mark.parametrize("command, out, expected", [
    ("report", "{dir}", "is a directory; give a file name"),
    ("report", "{file}/r.html", "is a file; give a directory"),
    ("report", "", "is not a usable path"),
    ("best", "{dir}", "is a directory; give a file name"),
    ("best", "{file}/b/best.yaml", "is under"),
], ids=["report-dir", "report-under-file", "report-empty", "best-dir", "best-under-file"])
def test_an_output_that_cannot_be_a_file_is_refused_before_anything_is_read(command, out, expected, tuner_store,
                                                                           db_dir, work):
    (work / "dir").mkdir()
    (work / "file").write_text("keep me\n")
    out = out.format(dir=work / "dir", file=work / "file")
    before, work_before = folder_snapshot(db_dir), folder_snapshot(work)
    refused(tuner(command, "--study", "s", "--out", out, "--storage", tuner_store, cwd=work), "--out", expected)
    assert folder_snapshot(db_dir) == before and folder_snapshot(work) == work_before
    assert list((work / "dir").iterdir()) == []


@pytest.mark.parametrize("command, out, expected", [
    ("best", "/proc/tuner-best.yaml", "--out: '/proc"),  # root may write into /proc's folder; the file system says no
    ("best", "/sys/tuner-best.yaml", "--out: '/sys"),
    ("best", "/dev/full", "--out: '/dev/full' is not a regular file"),
    ("report", "/proc/tuner-report.html", "--out: '/proc"),
    ("report", "/dev/full", "--out: '/dev/full' is not a regular file"),
], ids=["best-proc", "best-sys", "best-device", "report-proc", "report-device"])
def test_an_output_the_file_system_refuses_is_one_line_and_nothing_changes(command, out, expected, tuner_store,
                                                                           db_dir, work):
    before, work_before = folder_snapshot(db_dir), folder_snapshot(work)
    line = refused(tuner(command, "--study", "s", "--out", out, "--storage", tuner_store, cwd=work), expected)
    assert "cannot write" in line or "not a regular file" in line, line
    assert folder_snapshot(db_dir) == before and folder_snapshot(work) == work_before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
@pytest.mark.parametrize("command", ["best", "report"])
def test_an_output_in_a_read_only_folder_is_one_line(command, tuner_store, work):
    (work / "locked").mkdir(mode=0o555)
    refused(tuner(command, "--study", "s", "--out", work / "locked" / "out", "--storage", tuner_store, cwd=work),
            "--out:", "locked", "permission denied")
    assert list((work / "locked").iterdir()) == []


def test_a_regular_file_where_the_reports_folder_goes_is_refused(tuner_store, db_dir, work):
    (work / "reports").write_text("not a folder\n")
    before = folder_snapshot(db_dir)
    refused(tuner("report", "--study", "s", "--storage", tuner_store, cwd=work), "--out", "'reports'", "is a file")
    assert (work / "reports").read_text() == "not a folder\n" and folder_snapshot(db_dir) == before


@pytest.mark.parametrize("port", ["-1", "65536", "10000000000"])
def test_a_dashboard_port_out_of_range_is_refused(port, tuner_store, db_dir, work):
    before = folder_snapshot(db_dir)
    refused(tuner("dashboard", "--study", "s", "--port", port, "--storage", tuner_store, cwd=work, timeout=60),
            f"--port: {port} is not a TCP port; allowed: 1 to 65535, or 0 for any free port")
    assert folder_snapshot(db_dir) == before


def test_a_dashboard_port_in_use_is_refused(tuner_store, db_dir, work):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = folder_snapshot(db_dir)
        refused(tuner("dashboard", "--study", "s", "--port", port, "--storage", tuner_store, cwd=work, timeout=60),
                f"--port {port}: already in use on 127.0.0.1", "or 0 for any free port")
    assert folder_snapshot(db_dir) == before


# --- 3. study names -------------------------------------------------------------------------------

NAME_CASES = [  # (command, --study value, what the line says)
    ("status", "", "'' is empty"),
    ("best", "", "'' is empty"),
    ("report", "", "'' is empty"),
    ("dashboard", "", "'' is empty"),
    ("worker", "", "'' is empty"),
    ("search", "", "'' is empty"),
    ("status", "   ", "is blank"),
    ("search", " s", "starts or ends with a space"),
    ("report", "a\tb", "has a control character"),
    ("best", "a\nb", "has a control character"),
    ("status", "x" * 10_000, "has 10,000 characters"),
    ("report", "x" * 201, "has 201 characters"),
    ("dashboard", "s\x1b[31m", "has a control character"),
]


@pytest.mark.parametrize("command, name, expected", NAME_CASES,
                         ids=[f"{c}-{n[:8].encode('unicode_escape').decode() or 'empty'}-{len(n)}"
                              for c, n, _ in NAME_CASES])
def test_a_study_name_outside_the_rule_is_refused_by_every_command(command, name, expected, tuner_store, db_dir,
                                                                    work):
    args = [a for a in READ_COMMANDS[command] if a not in ("--study", "s")]
    before = folder_snapshot(db_dir)
    line = refused(tuner(*args, "--study", name, "--storage", tuner_store, cwd=work), "--study: ", expected,
                   STUDY_NAME_RULE)
    assert len(line) < 500  # a 10,000-character name is quoted cut short
    assert folder_snapshot(db_dir) == before and list(work.iterdir()) == []


@pytest.mark.postgres
def test_a_10000_character_name_is_refused_before_postgresql_sees_it(pg_tuner_store, work):
    before = pg_snapshot(pg_tuner_store)
    refused(tuner(*SEARCH, "--study", "y" * 10_000, "--storage", pg_tuner_store, cwd=work),
            "--study: 'yyyy", "has 10,000 characters")
    refused(tuner("status", "--study", "y" * 10_000, "--storage", pg_tuner_store, cwd=work), "has 10,000 characters")
    assert pg_snapshot(pg_tuner_store) == before


@pytest.mark.parametrize("name, expected", [("   ", "is blank"), ("z" * 300, "has 300 characters"),
                                            ("a\u0000b", "has a control character")],
                         ids=["blank", "300-chars", "nul"])
def test_the_spaces_search_study_follows_the_same_rule(name, expected, tuner_store, db_dir, work):
    space = work / "space.yaml"
    space.write_text(temp_space_text(study=name))
    before = folder_snapshot(db_dir)
    refused(tuner("search", "--space", space, "--storage", tuner_store, cwd=work),
            f"{space}: search.study: ", expected, STUDY_NAME_RULE)
    assert folder_snapshot(db_dir) == before


def test_names_that_slug_alike_get_their_own_report_files_within_the_name_limit(tuner_store, work):
    names = ["a'b\"c", "a;b;c", "A;B;C", "é" * 200, "reports/../../escape"]
    for name in names:
        add_study(tuner_store, name)
    pages = {}
    for name in names:
        result = tuner("report", "--study", name, "--storage", tuner_store, cwd=work)
        assert result.returncode == 0, result.stderr[-2000:]
        path = work / result.stdout.splitlines()[0]
        assert path.parent == work / "reports" and len(path.name.encode()) <= 255
        pages[name] = path
    assert len(set(pages.values())) == len(names)  # no page overwrote another
    for name, path in pages.items():
        assert name.replace("'", "&#x27;").replace('"', "&quot;") in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in (work / "reports").iterdir()) == sorted(p.name for p in pages.values())


def test_a_plain_name_keeps_its_plain_report_file(tuner_store, work):
    result = tuner("report", "--study", "s", "--storage", tuner_store, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == "reports/s.html" and (work / "reports" / "s.html").is_file()


def test_status_without_a_study_shows_the_newest_and_an_empty_one_is_not_taken_for_it(tuner_store, work):
    add_study(tuner_store, "newer")
    result = tuner("status", "--storage", tuner_store, cwd=work)
    assert result.returncode == 0 and result.stdout.startswith("study 'newer'"), result.stderr
    refused(tuner("status", "--study", "", "--storage", tuner_store, cwd=work), "--study: '' is empty")


# --- 4. the dashboard's Host check ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`tuner dashboard --port 0` on a study, for raw HTTP requests; (port, process)."""
    folder = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{folder / 'tuner.db'}"
    add_study(url, "secret-study")
    process = subprocess.Popen([sys.executable, "-m", "tuner.cli", "dashboard", "--study", "secret-study",
                                "--port", "0", "--storage", url], cwd=folder, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert " on http://127.0.0.1:" in line, (line, process.stderr.read() if process.poll() is not None else "")
        yield int(line.split("http://127.0.0.1:")[1].split("/")[0]), process
    finally:
        process.terminate()
        process.wait(timeout=30)


def raw_get(port: int, host: str | None, path: str = "/") -> tuple[int, bytes]:
    """One HTTP request with exactly the Host header given (None: HTTP/1.0 without one)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n" if host is not None
               else f"GET {path} HTTP/1.0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(request.encode("latin-1"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


FOREIGN_HOSTS = ["attacker.example:{port}", "attacker.example", "localhost.attacker.example:{port}",
                 "127.0.0.1:{other}", "localhost", "127.0.0.2:{port}", "0.0.0.0:{port}", None]


@pytest.mark.parametrize("host", FOREIGN_HOSTS, ids=[str(h) for h in FOREIGN_HOSTS])
@pytest.mark.parametrize("path", ["/", "/token"])
def test_the_dashboard_refuses_a_foreign_host_header(dashboard, host, path):
    port, _ = dashboard
    header = None if host is None else host.format(port=port, other=port + 1 if port < 65535 else port - 1)
    status, body = raw_get(port, header, path)
    assert status == 403 and b"secret-study" not in body and b"token" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}"])
def test_the_dashboard_answers_its_loopback_names(dashboard, host):
    port, _ = dashboard
    status, body = raw_get(port, host.format(port=port))
    assert status == 200 and b"secret-study" in body
    status, body = raw_get(port, host.format(port=port), "/token")
    assert status == 200 and json.loads(body)["token"]
