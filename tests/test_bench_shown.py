"""bench/shown.py: the command line written beside bench results never names this machine's home folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from shown import command  # noqa: E402


def test_home_is_written_as_tilde_and_the_line_pastes_back():
    home = str(Path.home())
    line = command("train_speed.py", ["--model", f"{home}/.cache/tooltune/models/gemma3-270m", "--rows", "a,b"])
    assert line == "python bench/train_speed.py --model ~/.cache/tooltune/models/gemma3-270m --rows a,b"
    assert home not in line


def test_arguments_that_need_quotes_keep_them_and_env_comes_first():
    line = command("quality.py", ["--label", "two words", f"x={Path.home()}/a b"], env="PYTHONPATH=src")
    assert line == "PYTHONPATH=src python bench/quality.py --label 'two words' 'x=~/a b'"
    assert command("db_recall.py", []) == "python bench/db_recall.py"
