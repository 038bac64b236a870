"""`tooltune --help` builds every subcommand's parser: none may load torch, transformers, fastapi or jieba (commands
import the modules that do inside the functions that use them; measured 0.3 s against 3.2-3.6 s with torch loaded)."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "fastapi", "jieba", "nltk", "matplotlib")


def test_building_the_command_line_loads_no_heavy_library():
    code = ("import sys, tooltune.cli; tooltune.cli.build_parser(); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
