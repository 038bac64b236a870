"""Fuzz the hotel search: any arguments (hostile types, huge numbers, long names of distinct characters) find hotels
or are refused with a `SearchError`, each in well under a second."""

from __future__ import annotations

import time

import pytest
from fuzz_support import search_arguments, search_target
from hypothesis import HealthCheck, given, settings

from tooltune.db import HotelDB


@pytest.fixture(scope="module")
def db(data_root):
    return HotelDB.open()


SLOWEST: list[float] = []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(arguments=search_arguments)
def test_any_arguments_search_or_are_refused(db, arguments):
    from tooltune.db import SearchError

    started = time.perf_counter()
    try:
        search_target(db, arguments)
    except SearchError:
        pass
    SLOWEST.append(time.perf_counter() - started)


def test_the_fuzzed_searches_were_fast():
    if not SLOWEST:
        pytest.skip("runs after test_any_arguments_search_or_are_refused")
    assert max(SLOWEST) < 1.0  # a 1 MB name took 34 s before names were bounded
