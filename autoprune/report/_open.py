"""Open the study a config names, for reading only: never create a study or an empty database."""

from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from autoprune.config import Config
from autoprune.errors import ConfigError
from autoprune.study import open_study

__all__ = ["open_existing_study"]


def open_existing_study(config: Config) -> optuna.Study:
    """The study of ``config``, which must exist already (``autoprune search`` creates it)."""
    url = config.storage_url
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"not a storage URL: {url!r}", key="study.storage") from None
    # SQLite would silently create an empty file; say what is missing instead.
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            key = "study.storage" if config.study.storage else "output"
            raise ConfigError(f"no study database at {parsed.database}; run `autoprune search` first", key=key)
    return open_study(url, config.study_name, create=False)
