"""The `tuner` command. Heavy imports (TensorFlow) happen inside commands, so `--help` is instant."""
from __future__ import annotations

import argparse
import sys

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuner", description=__doc__.splitlines()[0].split(".")[0])
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
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input, printed as one line instead of a traceback."""
    from tuner.config import ConfigError

    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError, KeyError]
    for module, name in (("tuner.data", "DataError"), ("tuner.train", "TrainingDiverged"),
                         ("tuner.store", "StoreError")):
        if module in sys.modules and hasattr(sys.modules[module], name):
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only input errors are shortened; the rest re-raise
        if isinstance(exc, _user_errors()):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"tuner: error: {message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
