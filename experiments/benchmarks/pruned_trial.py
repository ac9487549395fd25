"""What a trial stopped after its first epoch costs, over that epoch, as a search worker runs it.

One process and one `TrialRunner` (a worker's trial function). A warm-up trial loads and splits
the data and reads or fits the baselines; then each of `--trials` trials (other values of the
space's first parameter) is stopped by its "pruner" after epoch 1 and timed whole: build, fit,
final metrics, clean-up. Its epoch runs from the training stream being ready (tracing included)
to the epoch's metrics being reported (per-epoch validation included). Wall and process CPU
time; the ratios are medians over the trials. Last line: JSON with `pruned_trial_over_epoch`.

    python experiments/benchmarks/pruned_trial.py --space temp --trials 6
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import tuner  # noqa: F401  (selects tf-keras before TensorFlow loads)
from tuner.space import load_space


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class StoppedAfter:
    """A trial as `TrialRunner` sees it (no store): its pruner stops it after `epochs` epochs."""

    def __init__(self, space, number: int, values: dict, epochs: int = 1):
        self.space, self.number, self.values, self.stop_after = space, number, values, epochs
        self.initial_epoch, self.epochs, self.parent, self.artifacts, self.pruned_at = 0, None, None, None, None
        self.reported: list[tuple[float, float]] = []

    @property
    def hyperparameters(self):
        hp = self.space.hyperparameters()
        hp.values.update(self.values)
        return hp

    def report_epoch(self, epoch: int, metrics: dict, last: bool = False) -> bool:
        self.reported.append(now())
        if epoch >= self.stop_after:
            self.pruned_at = epoch
        return self.pruned_at is not None


def spread(param, n: int = 5) -> list:
    """`n` values of a searched parameter away from its bounds (its choices, if categorical)."""
    if param.values:
        return list(param.values)
    shares = [(i + 1) / (n + 1) for i in range(n)]
    if param.distribution == "log_uniform_values":
        points = [param.min * (param.max / param.min) ** s for s in shares]
    else:
        points = [param.min + (param.max - param.min) * s for s in shares]
    return [round(v) for v in points] if param.distribution == "int_uniform" else points


def measure(space_name: str, trials: int, log=print) -> dict:
    """The ratios of `trials` pruned trials of the space (after a warm-up trial), as the JSON line has them."""
    from tuner import train
    from tuner.search.hypermodel import TrialRunner

    space = load_space(space_name)
    streams: list[tuple[float, float]] = []  # when each trial's training stream was ready: its epoch starts
    make_stream = train.train_dataset

    def timed_stream(*a, **k):
        stream = make_stream(*a, **k)
        streams.append(now())
        return stream

    train.train_dataset = timed_stream
    try:
        runner = TrialRunner(space)
        first = space.parameters[0]
        values = spread(first)
        runner(StoppedAfter(space, 0, {first.path: values[0]}))  # warm-up: data, baselines, the first trace
        rows = []
        for i in range(trials):
            ctx = StoppedAfter(space, i + 1, {first.path: values[(i + 1) % len(values)]})
            streams.clear()
            started = now()
            runner(ctx)
            ended = now()
            trial = [b - a for a, b in zip(started, ended)]
            epoch = [b - a for a, b in zip(streams[0], ctx.reported[0])]
            rows.append({"trial_s": round(trial[0], 3), "epoch_s": round(epoch[0], 3),
                         "wall": round(trial[0] / epoch[0], 3), "cpu": round(trial[1] / epoch[1], 3)})
            log(f"trial {i + 1}: {rows[-1]}")
    finally:
        train.train_dataset = make_stream
    return {"space": space_name, "trials": trials,
            "pruned_trial_over_epoch": round(statistics.median(r["wall"] for r in rows), 3),
            "pruned_trial_over_epoch_cpu": round(statistics.median(r["cpu"] for r in rows), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="temp", help="a shipped space's name or a space file")
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    print(json.dumps(measure(args.space, args.trials, log=lambda line: print(line, flush=True))))


if __name__ == "__main__":
    main()
