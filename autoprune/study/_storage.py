"""Where the study lives: storage URLs (RDB or journal file, with heartbeats), the sampler, create-or-load."""

from __future__ import annotations

import importlib.util
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import optuna
from optuna.storages import BaseStorage

from autoprune.errors import AutopruneError, ConfigError

__all__ = [
    "DIRECTIONS",
    "JOURNAL_SCHEME",
    "StorageLost",
    "create_or_load_study",
    "describe_storage",
    "guard_storage",
    "mask_password",
    "make_sampler",
    "open_storage",
    "open_study",
    "worker_seed",
]

DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")
JOURNAL_SCHEME = "journal://"
KEY = "study.storage"
URL_FORMS = "sqlite:///file.db, postgresql://user@host/db, mysql://user@host/db or journal:///path/study.log"
SCHEMA_ATTEMPTS = 5
# The Python module a database driver imports -> what to install to get it.
DRIVERS = {
    "psycopg2": "autoprune[postgres] (psycopg2-binary)",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    # TPE's constant_liar (Optuna's default) counts trials running on other workers as bad, so parallel workers
    # spread out instead of proposing the same plan.
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; known: tpe, nsga2, random, gp", key="study.sampler")


def worker_seed(seed: int, worker_index: int) -> int:
    """Worker 0 uses the study seed itself (a one-worker run is unchanged); others a seed derived from both."""
    if worker_index == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, worker_index]).generate_state(1)[0])


def _journal(url: str, interval: int | None, grace: int | None) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    from autoprune.study._heartbeat import JournalHeartbeatStorage

    path = Path(url[len(JOURNAL_SCHEME) :])
    if not path.name:
        raise ConfigError(f"storage {url!r} names no file; expected e.g. journal:///shared/fs/study.log", key=KEY)
    if not path.parent.is_dir():
        raise ConfigError(f"storage {url!r}: folder {str(path.parent)!r} does not exist", key=KEY)
    if path.is_dir():
        raise ConfigError(f"storage {url!r} names a folder; expected a file, e.g. {url.rstrip('/')}/study.log", key=KEY)
    try:
        backend = JournalFileBackend(str(path))
        if interval is None:
            from optuna.storages import JournalStorage

            return JournalStorage(backend)
        return JournalHeartbeatStorage(backend, heartbeat_interval=interval, grace_period=grace)
    except OSError as exc:
        raise ConfigError(f"storage {url!r}: cannot use the journal file: {exc.strerror}", key=KEY) from None


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (Optuna wraps SQLAlchemy's errors in its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _schema_race(exc: BaseException) -> bool:
    """The errors a process gets when another creates Optuna's tables (or its version row) at the same moment:
    PostgreSQL's UniqueViolation on pg_type or "already exists", SQLite's and MySQL's "already exists"."""
    import sqlalchemy.exc

    for cause in _causes(exc):
        if isinstance(cause, sqlalchemy.exc.IntegrityError):
            return True
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and "already exists" in str(cause):
            return True
    return False


def _create_rdb_storage(
    url: str, engine_kwargs: dict[str, object], interval: int | None, grace: int | None
) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, which creates Optuna's schema on an empty database. Workers started together race
    to create it and all but one fail; the table exists by then, so the losers try again and find it."""
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace
                )
        except Exception as exc:
            if attempt == SCHEMA_ATTEMPTS or not _schema_race(exc):
                raise
            time.sleep(random.uniform(0.05, 0.25) * attempt)  # out of step with the other losers
    raise AssertionError("unreachable")  # pragma: no cover


def _rdb(url: str, interval: int | None, grace: int | None) -> BaseStorage:
    import sqlalchemy
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage {url!r} is not a storage URL; expected {URL_FORMS}", key=KEY) from None
    backend = parsed.get_backend_name()
    if parsed.drivername == "postgresql" and not _importable("psycopg"):
        # SQLAlchemy 2.1 defaults to psycopg 3; the `postgres` extra installs psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    engine_kwargs: dict[str, object] = {}
    if backend == "sqlite":
        # Several local workers on one SQLite file wait for its lock instead of failing "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif backend == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    try:
        return _create_rdb_storage(parsed.render_as_string(hide_password=False), engine_kwargs, interval, grace)
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "a database driver"
        install = DRIVERS.get(str(missing).split(".")[0], str(missing))
        raise ConfigError(
            f"storage {url!r} needs the Python module {missing!r}, which is not installed; install {install}", key=KEY
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise ConfigError(f"storage {url!r}: unknown database {parsed.drivername!r}; expected {URL_FORMS}", key=KEY) from None
    except sqlalchemy.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split())[:200]
        raise ConfigError(f"storage {url!r}: cannot connect: {reason}", key=KEY) from None
    except Exception as exc:  # SQLAlchemy and the drivers raise many types for a bad URL
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"storage {url!r}: cannot open: {type(exc).__name__}: {reason}", key=KEY) from None


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None) -> BaseStorage:
    """The storage a URL names, connected and checked: an RDB URL or ``journal:///path/file.log``.

    With ``heartbeat_interval`` a running trial's heartbeat is recorded every that many seconds, and a trial
    without one for ``grace_period`` seconds (default twice the interval) is failed by the next worker that looks.
    Any problem (malformed URL, missing driver, unreachable server) is one ConfigError, before anything is created.
    """
    if url.startswith(JOURNAL_SCHEME):
        return _journal(url, heartbeat_interval, grace_period)
    return _rdb(url, heartbeat_interval, grace_period)


class StorageLost(AutopruneError):
    """The database stopped answering during a search. Finished trials are kept; run the search again once it
    is back (the interrupted trial fails after its heartbeat's grace period)."""


def mask_password(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``."""
    import sqlalchemy
    import sqlalchemy.exc

    if url.startswith(JOURNAL_SCHEME):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def describe_storage(storage: str | BaseStorage) -> str:
    """How an error names a storage: its URL, password masked."""
    if isinstance(storage, str):
        return mask_password(storage)
    url = getattr(storage, "url", None)
    return mask_password(url) if isinstance(url, str) else type(storage).__name__


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the database connection failed or went away."""
    import sqlalchemy.exc

    return any(
        isinstance(cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError))
        for cause in _causes(exc)
    )


@contextmanager
def guard_storage(storage: str | BaseStorage) -> Iterator[None]:
    """Turn a lost database connection inside the block into one ``StorageLost`` line naming the storage,
    instead of a long traceback that ends in Optuna's "invalid data in the commit"."""
    import sqlalchemy.exc

    try:
        yield
    except AutopruneError:
        raise
    except Exception as exc:
        if not connection_lost(exc):
            raise
        driver = next((c for c in _causes(exc) if isinstance(c, sqlalchemy.exc.DBAPIError)), exc)
        detail = getattr(driver, "orig", None) or driver
        reason = " ".join(str(detail).split())[:200]
        raise StorageLost(
            f"storage {describe_storage(storage)!r}: connection lost ({reason}); the finished trials are kept: "
            "run the same command again once the database is back"
        ) from exc


def _storage(storage: str | BaseStorage) -> BaseStorage:
    return open_storage(storage) if isinstance(storage, str) else storage


def _named_metrics(study: optuna.Study, metric_names: Sequence[str] | None) -> optuna.Study:
    if metric_names is not None and study.metric_names != list(metric_names):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study


def create_or_load_study(
    storage: str | BaseStorage,
    study_name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    metric_names: Sequence[str] | None = None,
) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it: of workers starting together, exactly one creates it."""
    storage = _storage(storage)
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, directions=list(DIRECTIONS), sampler=sampler
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
        created = False
    return _named_metrics(study, metric_names), created


def open_study(
    storage: str | BaseStorage,
    study_name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    metric_names: Sequence[str] | None = None,
    create: bool = True,
) -> optuna.Study:
    """Create or load the study by name, or only load it when ``create`` is False."""
    if create:
        return create_or_load_study(storage, study_name, sampler=sampler, metric_names=metric_names)[0]
    url = storage if isinstance(storage, str) else type(storage).__name__
    storage = _storage(storage)
    try:
        study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
    except KeyError:
        raise ConfigError(f"no study named {study_name!r} in storage {url!r}; run `autoprune search` first") from None
    return _named_metrics(study, metric_names)
