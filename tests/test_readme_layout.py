"""The README's Layout section names every module and package of src/tooltune, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layout_section_matches_the_source_tree():
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+(?:\.py|/))`", section))
    package = ROOT / "src" / "tooltune"
    present = {p.name + "/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    present |= {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    assert sorted(present - named) == [], "not in the README's Layout"
    assert sorted(named - present) == [], "in the README's Layout but not in src/tooltune"
