"""The command line a bench script writes beside its results, with the user's home folder shown as `~`.

    from shown import command
    command("train_speed.py")  # 'python bench/train_speed.py --model ~/.cache/tooltune/models/gemma3-270m ...'

The shell expands `~` before the script sees it; results files are committed, so they must not name this machine's
home folder.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def command(script: str, argv: list[str] | None = None, env: str = "") -> str:
    """`[ENV ]python bench/SCRIPT ARGS` with every occurrence of the home folder in ARGS written as `~`."""
    home = str(Path.home())
    args = [a.replace(home, "~") for a in (sys.argv[1:] if argv is None else argv)]
    # shlex would quote `~` and so stop it expanding when the line is pasted back; quote only what needs it
    shown = " ".join(a if a.startswith("~/") and shlex.quote(a[2:]) == a[2:] else shlex.quote(a) for a in args)
    return " ".join(part for part in (env, f"python bench/{script}", shown) if part)
