"""The `tuner` command. Heavy imports (TensorFlow) happen inside commands, so `--help` is instant."""
from __future__ import annotations

import argparse
import sys

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tuner.errors import TunerError


def cmd_train(args) -> int:
    from tuner import config

    cfg = config.load(args.config)  # before TensorFlow loads: bad configs fail fast
    from tuner import train

    out = args.out or f"runs/{cfg.hash()}"
    train.run(cfg, out_dir=out)
    return 0


def cmd_recommend(args) -> int:
    from tuner.export import recommend

    history = [h for h in args.history.split(",") if h] if args.history else None
    for rank, (item, title, score) in enumerate(recommend(args.model, args.user, args.k, history), 1):
        label = f"{item}  {title}" if title != item else item
        print(f"{rank:>3}  {score:8.4f}  {label}")
    return 0


TRIAL_FN = "tuner.hypermodel:trial_fn"


def _store(args):
    from tuner.store import open_store

    return open_store(args.storage)


def cmd_search(args) -> int:
    import threading
    from pathlib import Path

    from tuner.search import create_or_resume_study, start_local_workers
    from tuner.space import load_space

    space = load_space(args.space)
    s = space.search
    name = args.study or s.study
    workers = args.workers or s.workers
    max_trials = args.max_trials or s.max_trials
    store = _store(args)
    study = create_or_resume_study(
        store, name, Path(space.source).read_text(), space.hyperparameters(), oracle=s.oracle,
        objective=s.objective, direction=s.direction, max_trials=max_trials, seed=s.seed, retries=s.retries,
        max_epochs=s.max_epochs if s.oracle == "hyperband" else None, factor=s.factor)
    from tuner.store import api

    counts = api.get_study(store, study.name).counts
    state = f"resuming, {counts.get('COMPLETED', 0)} trials completed" if counts else "new"
    print(f"study '{name}' in {store.url}: {state}; "
          f"{s.oracle} oracle, {max_trials} trials, objective {s.objective} ({s.direction}), {workers} worker(s)",
          flush=True)
    stop = threading.Event()
    monitor = threading.Thread(target=_watch, args=(store, name, max_trials, workers, stop), daemon=True)
    monitor.start()
    try:
        codes = start_local_workers(workers, store.raw_url, name, TRIAL_FN)
    finally:
        stop.set()
        monitor.join(timeout=10)
    print(_progress_line(store, name, max_trials, workers, 0.0, final=True).replace(f"[{name}]", f"study '{name}' finished:"),
          flush=True)
    print(f"next: tuner report --study {name}   |   tuner best --study {name} --out best.yaml", flush=True)
    return 0 if all(code == 0 for code in codes) else 1


def _progress_line(store, study: str, max_trials: int, workers: int, elapsed: float, final: bool = False) -> str:
    """Trials done/running/failed, the best so far with its values, elapsed time and an estimate of what is left."""
    from tuner.store import api

    trials = api.list_trials(store, study)
    count = lambda status: sum(t.status == status for t in trials)  # noqa: E731
    done, failed, running = count("COMPLETED"), count("FAILED"), count("RUNNING")
    line = f"[{study}] {done}/{max_trials} done, {running} running, {failed} failed"
    best = api.best_trial(store, study)
    if best is not None:
        line += f" | best {best.objective:.4f} (trial {best.number}: {_short_values(best.params)})"
    if not final:
        durations = [t.duration for t in trials if t.duration]
        left = max(0, max_trials - done - failed)
        line += f" | {_duration(elapsed)} elapsed"
        if durations and left:
            line += f", ~{_duration(left * sum(durations) / len(durations) / max(workers, 1))} left"
    return line


def _watch(store, study: str, max_trials: int, workers: int, stop) -> None:
    import time

    started, last = time.monotonic(), None
    while not stop.wait(5.0):
        try:
            line = _progress_line(store, study, max_trials, workers, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - progress display must never stop a search
            line = f"[{study}] progress unavailable: {exc}"
        key = line.split(" | ")[0:2]
        if key != last:
            print(line, flush=True)
            last = key


def _short_values(params: dict, limit: int = 160) -> str:
    shown = {k.rsplit(".", 1)[-1]: v for k, v in params.items() if not k.startswith("tuner/")}
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def cmd_worker(args) -> int:
    from tuner.search import run_worker

    run_worker(args.storage, args.study, TRIAL_FN, worker_id=args.worker_id)
    return 0


def cmd_status(args) -> int:
    import json

    from tuner.store import api

    store = _store(args)
    study = args.study or _latest_study(store)
    trials = api.list_trials(store, study)
    best = api.best_trial(store, study)
    if args.json:
        rows = [{"number": t.number, "status": t.status, "params": t.params, "objective": t.objective,
                 "duration_s": t.duration, "worker": t.worker, "error": t.error,
                 "best": best is not None and t.id == best.id} for t in trials]
        print(json.dumps({"study": study, "trials": rows}, indent=2, default=str))
        return 0
    s = api.get_study(store, study)
    print(f"study '{study}': objective {s.objective} ({s.direction}), {s.oracle} oracle, {len(trials)} trials")
    print(f"  {'#':>4}  {'status':<11} {'objective':>9}  {'time':>7}  {'worker':<10} parameters")
    for t in trials:
        mark = "*" if best is not None and t.id == best.id else " "
        objective = f"{t.objective:.4f}" if t.objective is not None else "-"
        duration = _duration(t.duration) if t.duration else "-"
        detail = _short_values(t.params) + (f"  [{t.error}]" if t.error else "")
        print(f"{mark} {t.number:>4}  {t.status:<11} {objective:>9}  {duration:>7}  {(t.worker or '-'):<10} {detail}")
    return 0


def _latest_study(store) -> str:
    from tuner.store import StoreError, api

    studies = api.list_studies(store)
    if not studies:
        raise StoreError(f"{store.url}: no studies yet (start one with tuner search --space temp)")
    return studies[-1].name


def cmd_studies(args) -> int:
    from tuner.store import api

    store = _store(args)
    studies = api.list_studies(store)
    if not studies:
        print(f"no studies in {store.url}")
    for s in studies:
        counts = ", ".join(f"{n} {status.lower()}" for status, n in sorted(s.counts.items())) or "no trials"
        print(f"{s.name:<20} {s.oracle:<10} {s.objective} ({s.direction})  {counts}  created {s.created:%Y-%m-%d %H:%M}")
    return 0


def cmd_best(args) -> int:
    from tuner import config
    from tuner.space import load_space_text
    from tuner.store import StoreError, api

    store = _store(args)
    study = api.get_study(store, args.study)
    best = api.best_trial(store, args.study)
    if best is None:
        raise StoreError(f"{store.url}: study '{args.study}' has no completed trial yet")
    space = load_space_text(study.space, study.name)
    cfg = config.from_dict(space.config_dict_for(best.params), f"study '{study.name}' trial {best.number}")
    header = (f"Best config of study '{study.name}' ({store.url}): trial {best.number}, "
              f"{study.objective} = {best.objective:.6g} ({study.direction}).\n"
              f"Searched values: {_short_values(space.searched_values(best.params), limit=10_000)}\n"
              f"Reproduce with: tuner train --config {args.out or 'best.yaml'}")
    text = config.dump(cfg, args.out, header=header)
    if args.out:
        print(f"wrote {args.out}: trial {best.number}, {study.objective} = {best.objective:.4f}")
    else:
        print(text, end="")
    return 0


def cmd_report(args) -> int:
    from tuner.report import write_report

    result = write_report(_store(args), args.study, args.out)
    print(result.path)
    print(f"parameter importance over {result.trials} trials:")
    for line in result.importance_lines():
        print(f"  {line}")
    return 0


def cmd_dashboard(args) -> int:
    from tuner.report import serve_dashboard

    dashboard = serve_dashboard(args.storage, args.study, port=args.port)
    print(f"serving study '{args.study}' on {dashboard.url} (Ctrl-C to stop)", flush=True)
    dashboard.serve_forever()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuner", description="Hyperparameter search for TensorFlow "
                                     "Recommenders two-tower retrieval models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one config; writes metrics.json and an exported model")
    p.add_argument("--config", required=True, help="training config YAML")
    p.add_argument("--out", help="output directory (default runs/<config hash>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("recommend", help="top-K items for a user from an exported model")
    p.add_argument("--model", required=True, help="the model directory written by `tuner train` (DIR/model)")
    p.add_argument("--user", required=True, help="raw user id")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--history", help="comma-separated recent item ids, most recent last (history models)")
    p.set_defaults(func=cmd_recommend)

    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--storage", help="SQLAlchemy URL of the trial store (default: env TUNER_STORAGE, "
                                           "else sqlite:///tuner.db)")

    p = sub.add_parser("search", parents=[storage], help="run a hyperparameter search (creates or resumes a study)")
    p.add_argument("--space", required=True, help="search-space YAML, or a built-in name: temp, negatives, full")
    p.add_argument("--study", help="study name (default: the space's search.study, else its file name)")
    p.add_argument("--workers", type=int, help="local worker processes (default: the space's search.workers)")
    p.add_argument("--max-trials", type=int, help="trials in the study, across all workers and restarts")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("worker", parents=[storage], help="join a study's search from this machine")
    p.add_argument("--study", required=True)
    p.add_argument("--worker-id", help="name shown in status and reports (default host-pid)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", parents=[storage], help="trials of a study, best marked with *")
    p.add_argument("--study", help="study name (default: the newest study)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("studies", parents=[storage], help="list the studies in the store")
    p.set_defaults(func=cmd_studies)

    p = sub.add_parser("best", parents=[storage], help="write the best trial as a training config")
    p.add_argument("--study", required=True)
    p.add_argument("--out", help="YAML file to write (default: print it)")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("report", parents=[storage], help="HiPlot HTML report of a study")
    p.add_argument("--study", required=True)
    p.add_argument("--out", help="HTML file (default reports/<study>.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", parents=[storage], help="serve a study's report on localhost, refreshed live")
    p.add_argument("--study", required=True)
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A `TunerError` (bad input) is printed as its one line with exit code 2;
    any other exception is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
    except TunerError as exc:
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
