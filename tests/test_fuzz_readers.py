"""Fuzz the dialogue readers: mutated copies of real records in every file format, and generated JSON records, are
read into dialogues or refused with tooltune's own error; what was read writes and reads back in every format."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from fuzz_support import generated_records, mutated_files, read_target
from hypothesis import HealthCheck, given, settings

from tooltune.cli import main
from tooltune.errors import InputError, ToolTuneError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read(case):
    with tempfile.TemporaryDirectory() as tmp:
        try:
            read_target(case, Path(tmp))
        except ToolTuneError as e:
            assert isinstance(e, InputError) and e.where, f"an error that does not say where: {e!r}"


@FAST
@given(mutated_files())
def test_mutated_files_read_or_refuse(case):
    _read(case)


@FAST
@given(generated_records())
def test_generated_records_read_or_refuse(case):
    _read(case)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_data_convert_exits_0_or_2_with_a_located_error(case):
    fmt, suffix, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"in{suffix}"
        path.write_bytes(data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["data", "convert", str(path), str(Path(tmp) / "out.jsonl"), "--to", "openai"]
                        + (["--from", fmt] if fmt else []))
        assert code in (0, 2)
        if code == 2:
            assert err.getvalue().startswith(f"tooltune: error: {path}"), err.getvalue()
