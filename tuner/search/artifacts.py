"""Where trials keep what outlives them: a Hyperband trial's weights, which the trials that
continue it (Keras Tuner's `tuner/trial_id`) start from.

One folder per study, `<root>/<study slug>/<trial number>/`. The root is `--artifacts DIR`, or
beside a SQLite store (`tuner.db` → `tuner.artifacts/`); a PostgreSQL store has no file to
stand beside, so the default is `./tuner-artifacts` with a warning: workers on other machines
must be given one shared path. A checkpoint is removed once no live Hyperband bracket and no
running trial needs it, and the study's folder once the study has no trials left to run.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tuner.store import Store
from tuner.store.studies import study_slug

WEIGHTS = "weights"  # a TensorFlow checkpoint prefix: weights.index, weights.data-*


def artifacts_root(store: Store, given: str | None, log) -> Path:
    """The artifact root for a store: `given`, else beside a SQLite file, else ./tuner-artifacts (warned)."""
    if given:
        return Path(given)
    if store.sqlite_file is not None:
        return Path(store.sqlite_file).with_suffix(".artifacts")
    log(f"warning: no --artifacts given: Hyperband checkpoints go to {Path('tuner-artifacts').resolve()}; "
        "workers on other machines need --artifacts naming one shared path")
    return Path("tuner-artifacts")


def study_folder(root: Path, study: str) -> Path:
    return root / study_slug(study)


def save(model, folder: Path) -> None:
    """The model's weights (and its optimizer's state, which the model tracks) as a checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(folder / WEIGHTS))


def restore(model, folder: Path) -> bool:
    """Loads the checkpoint in `folder` into `model`; False when there is none."""
    if not (folder / f"{WEIGHTS}.index").is_file():
        return False
    model.load_weights(str(folder / WEIGHTS)).expect_partial()
    return True


def remove_unneeded(folder: Path, drop: set[int]) -> None:
    """Deletes the checkpoints of trials `drop` (numbers) in a study's folder. Named, not
    everything-but: a trial that started after the decision writes a folder no one decided on."""
    for number in drop:
        shutil.rmtree(folder / str(number), ignore_errors=True)


def remove_study(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the root too, when this was its last study
    except OSError:
        pass
