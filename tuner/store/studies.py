"""Studies: created once, resumed only with the same space and settings, listed with their trial counts."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tuner.errors import StoreError
from tuner.settings import StudySettings
from tuner.store.engine import Store
from tuner.store.names import check_study_name
from tuner.store.schema import studies, trials


def study_slug(name: str) -> str:
    """A file name for study `name` (its report page, its artifact folder): the name itself when
    made of lower-case letters, digits, '.', '_' and '-'; any other name becomes a slug of those
    plus a hash of the exact name (`a'b"c` and `a;b;c` must not share a file, nor `Temp` and
    `temp` on a case-insensitive file system). At most 80 + 11 ASCII characters."""
    slug = re.sub(r"[^a-z0-9._-]+", "_", name.lower()).strip("._")[:80] or "study"
    if slug != name:
        slug += "-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return slug


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    space: str  # the search-space YAML text
    settings: StudySettings  # objective, direction and oracle included (columns of their own in the table)
    created: datetime
    counts: dict = field(default_factory=dict)  # trials per status

    @property
    def objective(self) -> str:
        return self.settings.search.objective

    @property
    def direction(self) -> str:  # min | max
        return self.settings.search.direction

    @property
    def oracle(self) -> str:
        return self.settings.search.oracle


COLUMNS = ("objective", "direction", "oracle")  # settings kept in columns of their own, not in the JSON


def settings_text(settings: StudySettings) -> str:
    """The JSON the `settings` column holds: `StudySettings.stored()` without the COLUMNS."""
    return json.dumps({k: v for k, v in settings.stored().items() if k not in COLUMNS}, sort_keys=True)


def stored_settings(text: str, **columns: str) -> StudySettings:
    """The settings of a `settings` column (and the `columns` beside it, when given)."""
    return StudySettings.from_stored({**json.loads(text), **columns})


def _study(row, counts: dict | None = None) -> Study:
    settings = stored_settings(row.settings, objective=row.objective, direction=row.direction, oracle=row.oracle)
    return Study(row.id, row.name, row.space, settings, row.created, counts or {})


def _counts(conn: Connection, study_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: {} for i in study_ids}
    query = (sa.select(trials.c.study_id, trials.c.status, sa.func.count())
             .where(trials.c.study_id.in_(study_ids)).group_by(trials.c.study_id, trials.c.status))
    for study_id, status, n in conn.execute(query):
        out[study_id][status] = n
    return out


def _row(conn: Connection, name: str):
    return conn.execute(sa.select(studies).where(studies.c.name == name)).first()


def create_or_get_study(store: Store, *, name: str, space: str, settings: StudySettings,
                        resizable: tuple[str, ...] = ()) -> tuple[Study, bool]:
    """The study `name`, created if new; (study, created). An existing study must match exactly:
    resuming with another space or other settings would mix incomparable trials. Settings named
    in `resizable` (the budget) may differ: the caller changes them (`api.resize_budget`)."""
    check_study_name(name)
    text = settings_text(settings)
    wanted = {"space": space, **{k: getattr(settings.search, k) for k in COLUMNS}}
    with store.write() as conn:
        row = _row(conn, name)
        created = row is None
        if created:
            try:
                with conn.begin_nested():  # a savepoint: losing the race to create it undoes only the insert
                    # `created` is shown by `tuner studies` only, so this machine's clock will do
                    conn.execute(sa.insert(studies).values(
                        name=name, settings=text, version=0,
                        created=datetime.now(timezone.utc).replace(tzinfo=None), **wanted))
            except sa.exc.IntegrityError:  # PostgreSQL: created concurrently by another process; compare with it
                created = False
            row = _row(conn, name)
    study = _study(row)
    if created:
        return study, True
    differ = [k for k, v in wanted.items() if getattr(study, k) != v]
    mine, theirs = json.loads(text), json.loads(settings_text(study.settings))  # compared as stored
    differ += [f"search.{k}" for k in sorted(set(mine) | set(theirs))
               if k not in resizable and mine.get(k) != theirs.get(k)]
    if differ:
        raise StoreError(f"{store.url}: study '{name}' exists with a different {', '.join(differ)}; "
                         "resume it with the same space and search settings, or choose another study name")
    return study, False


def get_study(store: Store, name: str, conn: Connection | None = None) -> Study:
    """The study `name` with its trial counts; a one-line error listing the known studies if absent."""
    check_study_name(name)
    if conn is None:
        with store.read() as conn:
            return get_study(store, name, conn)
    row = _row(conn, name)
    if row is None:
        names = conn.execute(sa.select(studies.c.name).order_by(studies.c.name)).scalars().all()
        known = f"studies: {', '.join(names)}" if names else "no studies yet"
        raise StoreError(f"{store.url}: no study named '{name}' ({known})")
    return _study(row, _counts(conn, [row.id])[row.id])


def list_studies(store: Store) -> list[Study]:
    """Every study, oldest first, with its trial counts."""
    with store.read() as conn:
        rows = conn.execute(sa.select(studies).order_by(studies.c.created, studies.c.id)).all()
        counts = _counts(conn, [r.id for r in rows])
    return [_study(r, counts[r.id]) for r in rows]


def latest_study(store: Store) -> Study:
    """The newest study (what `tuner status` shows without --study); a one-line error if there is none."""
    studies = list_studies(store)
    if not studies:
        raise StoreError(f"{store.url}: no studies yet (start one with tuner search --space temp)")
    return studies[-1]
