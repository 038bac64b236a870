"""Shared fixtures: the course data from ../shared/data (skipped, naming the path, only where it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooltune import paths


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = paths.data_dir()
    if not (root / "hotel").is_dir() or not (root / "crosswoz").is_dir():
        pytest.skip(f"course data not found at {root} (set TOOLTUNE_DATA or run `tooltune data fetch`)")
    return root


@pytest.fixture(scope="session")
def course_dir(data_root: Path) -> Path:
    return data_root / paths.COURSE_SPLIT


@pytest.fixture(scope="session")
def hotel_db_json(data_root: Path) -> Path:
    return data_root / paths.HOTEL_DB_JSON


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
