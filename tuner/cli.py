"""The `tuner` command. Heavy imports (TensorFlow) happen inside commands, so `--help` is instant."""
from __future__ import annotations

import argparse
import sys

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tuner.errors import TunerError, error_line


def cmd_train(args) -> int:
    from tuner import config

    cfg = config.load(args.config)  # before TensorFlow loads: bad configs fail fast
    from tuner import memory, paths

    memory.check(cfg, args.config)  # before loading: synthetic data or histories can be the runaway
    out = paths.write_out(args.out or f"runs/{cfg.hash()}", "--out")  # tried now, made when the run writes
    from tuner.data import load_dataset

    dataset = load_dataset(cfg.dataset, seed=cfg.seed)  # before TensorFlow loads: bad data fails fast
    memory.check(cfg, args.config, dataset)
    from tuner import train

    train.run(cfg, train.prepare_split(cfg, dataset), out_dir=out)
    return 0


def cmd_baselines(args) -> int:
    from tuner import config

    cfg = config.load(args.config)
    from tuner import baselines, train
    from tuner.evaluate import format_table, most_popular
    from tuner.heldout import with_cold_users

    split = train.prepare_split(cfg)  # loaded and split exactly as `tuner train` does
    found = baselines.baselines_for(cfg, split, log=train.log_stderr)
    ev = cfg.evaluation
    for part in ("val", "test"):
        popular = with_cold_users(lambda s, part=part: most_popular(s, part, ev.ks, ev.memory_mb), split, part)
        if popular:
            print(f"{part}:\n" + format_table({"MostPopular": popular, **baselines.columns(found, part)}))
    print("\n".join(baselines.describe(found)))
    return 0


def cmd_recommend(args) -> int:
    from tuner import paths
    from tuner.errors import ConfigError

    if args.k < 1:
        raise ConfigError(f"-k: how many items to recommend must be >= 1 (got {args.k})")
    model_dir = paths.saved_model_dir(args.model, "--model")  # before TensorFlow loads
    from tuner.export import recommend

    history = [h for h in args.history.split(",") if h] if args.history else None
    rows, note = recommend(model_dir, args.user, args.k, history)
    if note:  # a cold user is served, not refused; stderr keeps stdout one row per item
        print(f"tuner: {note}", file=sys.stderr)
    if len(rows) < args.k:  # the export keeps a fixed top list (tuner.export.export_model's k)
        print(f"tuner: -k {args.k}: the model serves its top {len(rows)} items only; all are listed", file=sys.stderr)
    for rank, (item, title, score) in enumerate(rows, 1):
        label = f"{item}  {title}" if title != item else item
        print(f"{rank:>3}  {score:8.4f}  {label}")
    return 0


ARTIFACTS_HELP = "folder for Hyperband checkpoints, shared by all workers (default: beside a SQLite store)"


def _store(args, read_only: bool = False):
    """The store of --storage; `read_only` commands never create one or change a database."""
    from tuner.store import open_store

    return open_store(args.storage, read_only=read_only)


def cmd_search(args) -> int:
    import threading

    from tuner import memory
    from tuner.search import create_or_resume_study, start_local_workers
    from tuner.search.flags import settings_with_flags
    from tuner.search.progress import progress_line, watch
    from tuner.space import load_space
    from tuner.store import check_study_name, get_study

    space = load_space(args.space)
    memory.check_space(space)  # the largest searched sizes, before a study is created
    s = settings_with_flags(args, space)  # before the store opens: a refused flag changes nothing
    name, workers = args.study or s.study, s.workers
    check_study_name(name, "--study" if args.study else f"{space.source}: search.study (default: the file's name)")
    store = _store(args)
    study = create_or_resume_study(store, name, space, search=s, budget="set" if args.max_trials else "extend")
    s = s.replace("the study's budget", max_trials=study.settings.search.max_trials)  # an extended one stays
    counts = get_study(store, study.name).counts
    state = f"resuming, {counts.get('COMPLETED', 0)} trials completed" if counts else "new"
    trials = f"{s.max_trials} trials" if s.max_trials else "trials until the oracle stops"
    print(f"study '{name}' in {store.url}: {state}; {s.oracle} oracle, {trials}, "
          f"objective {s.objective} ({s.direction}), {workers} worker(s)", flush=True)
    stop = threading.Event()
    monitor = threading.Thread(target=watch, args=(store, name, s.max_trials, workers, stop), daemon=True)
    monitor.start()
    try:
        if args.ray or s.engine == "ray":  # only then is Ray imported
            from tuner.search.ray import run_ray_workers

            codes = run_ray_workers(args.ray or "auto", store.raw_url, name, workers,
                                    cpus_per_worker=args.cpus_per_worker, trials_per_process=s.trials_per_process)
        else:
            codes = start_local_workers(workers, store.raw_url, name, artifacts=args.artifacts,
                                        trials_per_process=s.trials_per_process)
    finally:
        stop.set()
        monitor.join(timeout=10)
    print(progress_line(store, name, s.max_trials, workers, 0.0, final=True).replace(f"[{name}]", f"study '{name}' finished:"),
          flush=True)
    print(f"next: tuner report --study {name}   |   tuner best --study {name} --out best.yaml", flush=True)
    return 0 if all(code == 0 for code in codes) else 1


def cmd_worker(args) -> int:
    from tuner.search import run_worker
    from tuner.store import check_worker_id, get_study

    if args.worker_id is not None:
        check_worker_id(args.worker_id, "--worker-id")
    with _store(args, read_only=True) as store:  # a worker never creates a store its study cannot be in
        get_study(store, args.study)
    run_worker(args.storage, args.study, worker_id=args.worker_id, artifacts=args.artifacts)
    return 0


def cmd_status(args) -> int:
    import json

    from tuner.report.references import read_references, summary_line
    from tuner.search.progress import duration
    from tuner.search.trial import short_values
    from tuner.store import best_trial, get_study, latest_study, list_trials

    store = _store(args, read_only=True)
    study = args.study if args.study is not None else latest_study(store).name
    trials = list_trials(store, study)
    best = best_trial(store, study)
    if args.json:
        rows = [{"number": t.number, "status": t.status, "params": t.params, "objective": t.objective,
                 "duration_s": t.duration, "worker": t.worker, "error": t.error,
                 "best": best is not None and t.id == best.id} for t in trials]
        print(json.dumps({"study": study, "trials": rows}, indent=2, default=str))
        return 0
    s = get_study(store, study)
    budget, pruning = s.settings.search.max_trials, (s.settings.search.early_terminate or {}).get("type")
    print(f"study '{study}': objective {s.objective} ({s.direction}), {s.oracle} oracle"
          f"{f', early_terminate {pruning}' if pruning else ''}, {len({t.kt_trial_id for t in trials})}/{budget or '?'} trials")
    print(f"  {'#':>4}  {'status':<11} {'objective':>9}  {'time':>7}  {'worker':<10} parameters")
    for t in trials:
        mark = "*" if best is not None and t.id == best.id else " "
        objective = f"{t.objective:.4f}" if t.objective is not None else "-"
        took = duration(t.duration) if t.duration else "-"
        detail = short_values(t.params) + (f"  [{t.error}]" if t.error else "")
        print(f"{mark} {t.number:>4}  {t.status:<11} {objective:>9}  {took:>7}  {(t.worker or '-'):<10} {detail}")
    baselines = summary_line(read_references(store, study, trials, best), s.objective, best and best.objective,
                             s.direction == "min")
    if baselines is not None:
        print(f"  {baselines}")
    return 0


def cmd_studies(args) -> int:
    from tuner.store import list_studies

    store = _store(args, read_only=True)
    studies = list_studies(store)
    if not studies:
        print(f"no studies in {store.url}")
    for s in studies:
        counts = ", ".join(f"{n} {status.lower()}" for status, n in sorted(s.counts.items())) or "no trials"
        print(f"{s.name:<20} {s.oracle:<10} {s.objective} ({s.direction})  {counts}  created {s.created:%Y-%m-%d %H:%M}")
    return 0


def cmd_best(args) -> int:
    from tuner import config, paths
    from tuner.search.trial import short_values
    from tuner.space import load_space_text
    from tuner.store import StoreError, best_trial, get_study

    if args.out is not None:
        paths.writable_file(args.out, "--out")  # before the store is read
    store = _store(args, read_only=True)
    study = get_study(store, args.study)
    best = best_trial(store, args.study)
    if best is None:
        raise StoreError(f"{store.url}: study '{args.study}' has no completed trial yet")
    space = load_space_text(study.space, study.name)
    cfg = config.from_dict(space.config_dict_for(best.params), f"study '{study.name}' trial {best.number}")
    header = (f"Best config of study '{study.name}' ({store.url}): trial {best.number}, "
              f"{study.objective} = {best.objective:.6g} ({study.direction}).\n"
              f"Searched values: {short_values(space.searched_values(best.params), limit=10_000)}\n"
              f"Reproduce with: tuner train --config {args.out or 'best.yaml'}")
    text = config.dump(cfg, header=header)
    if args.out:
        paths.write_out(args.out, "--out", text)
        print(f"wrote {args.out}: trial {best.number}, {study.objective} = {best.objective:.4f}")
    else:
        print(text, end="")
    return 0


def cmd_report(args) -> int:
    from tuner import paths
    from tuner.report import default_path, write_report

    out = paths.writable_file(args.out if args.out is not None else str(default_path(args.study)), "--out")  # first
    result = write_report(_store(args, read_only=True), args.study, out)
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's refusals (`--workers two`) in the one-line form of every other
        self.exit(2, f"{error_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tuner", description="Hyperparameter search for TensorFlow "
                                     "Recommenders two-tower retrieval models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one config; writes metrics.json and an exported model")
    p.add_argument("--config", required=True, help="training config YAML")
    p.add_argument("--out", help="output directory (default runs/<config hash>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("baselines", help="MostPopular and the baselines of evaluation.baselines on a config's split, without training a model")
    p.add_argument("--config", required=True, help="training config YAML (its dataset, split and evaluation)")
    p.set_defaults(func=cmd_baselines)

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
    p.add_argument("--space", required=True, help="search-space YAML, or a built-in name (temp, negatives, full, custom_towers)")
    p.add_argument("--study", help="study name (default: the space's search.study, else its file name)")
    p.add_argument("--workers", type=int,
                   help="worker processes, or Ray actors with --ray (default: the space's search.workers); at most "
                        "one per GPU, or per CPU core without GPUs, unless env TUNER_MAX_WORKERS sets another limit")
    p.add_argument("--max-trials", type=int, help="trials in the study, across all workers and restarts (>= 1)")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run the workers as actors on a Ray cluster: 'auto' (this machine's cluster, the default) "
                        "or host:port; needs pip install 'tuner[ray]'")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="with --ray on a cluster without GPUs: CPUs each worker reserves (default 1)")
    p.add_argument("--artifacts", metavar="DIR", help=ARTIFACTS_HELP)
    p.add_argument("--enqueue", action="append", metavar="FILE",
                   help="a training config (e.g. from tuner best) whose searched values run first; repeatable")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("worker", parents=[storage], help="join a study's search from this machine")
    p.add_argument("--study", required=True)
    p.add_argument("--worker-id", help="name shown in status and reports (default host-pid; 1 to 200 printable "
                                       "characters)")
    p.add_argument("--artifacts", metavar="DIR", help=ARTIFACTS_HELP)
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
    p.add_argument("--out", help="HTML file (default reports/<study>.html; names with other characters than "
                                 "a-z 0-9 . _ - get a slug and a hash)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", parents=[storage], help="serve a study's report on localhost, refreshed live")
    p.add_argument("--study", required=True)
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free port)")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A `TunerError` (bad input) is printed as its one line with exit code 2;
    any other exception is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "study", None) is not None:  # one rule for every command's --study
            from tuner.store import check_study_name

            check_study_name(args.study, "--study")
        return args.func(args)
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
    except TunerError as exc:
        print(error_line(str(exc)), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
