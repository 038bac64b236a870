"""Where data lives: `--data-dir`, else `$TOOLTUNE_DATA`, else `../shared/data` beside the repo, else the user cache.

A data dir has the layout of the public sources it comes from (see `tooltune data fetch`):
`crosswoz/{hotel_db.json,val.json.zip,test.json.zip,...}` and `hotel/{v3_chatglm3_llama2,raw,agiclass_hotel_chatbot}/...`.
"""

from __future__ import annotations

import os
from pathlib import Path

from tooltune.errors import ToolTuneError

ENV_VAR = "TOOLTUNE_DATA"


def cache_dir() -> Path:
    """The user cache for fetched data, models and databases (`$XDG_CACHE_HOME/tooltune` or `~/.cache/tooltune`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tooltune"


def _beside_repo() -> list[Path]:
    here = Path(__file__).resolve()
    # src/tooltune/paths.py -> the repo is parents[2]; shared/ sits next to it. Also try next to the working dir.
    return [here.parents[3] / "shared" / "data", Path.cwd().resolve().parent / "shared" / "data",
            Path.cwd().resolve() / "shared" / "data"]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data dir to read: the first of `explicit`, `$TOOLTUNE_DATA`, `../shared/data`, `cache_dir()/data`.

    An explicit or environment path must exist; the defaults are returned even when empty so that
    `tooltune data fetch` can fill the cache.
    """
    for given, what in ((explicit, "--data-dir"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise ToolTuneError(f"{what} points to {path}, which is not a directory")
            return path
    for candidate in _beside_repo():
        if (candidate / "crosswoz").is_dir() or (candidate / "hotel").is_dir():
            return candidate
    return cache_dir() / "data"


def data_file(relative: str, explicit: str | os.PathLike | None = None) -> Path:
    """A file of the data dir, with an error that says how to get it when it is missing."""
    root = data_dir(explicit)
    path = root / relative
    if not path.exists():
        raise ToolTuneError(f"missing data file {path}: run `tooltune data fetch` (online) or point --data-dir / "
                            f"${ENV_VAR} at a copy of the data")
    return path


COURSE_SPLIT = "hotel/v3_chatglm3_llama2"
HOTEL_DB_JSON = "crosswoz/hotel_db.json"
