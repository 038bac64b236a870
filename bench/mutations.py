"""Named mutations of the modules where a silent bug costs most, each run against the tests meant to catch it.

Each mutation replaces one exact piece of source text (it must occur exactly once) in a temporary copy of the
repository (src/, tests/, configs/, pyproject.toml), then runs only its test files there with `pytest -x`. A mutant
is killed when the tests fail; it survives when they pass. The unmutated copy is run first against every test file
named below: a mutation score means nothing over tests that already fail.

    python bench/mutations.py                   # every mutation; writes bench/results/mutations.md
    python bench/mutations.py --only resume     # the mutations whose name contains "resume" (no file written)
    python bench/mutations.py --list

The course data is taken from $TOOLTUNE_DATA, else ../shared/data beside this repository.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "configs", "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    """File under the repository root."""
    old: str
    """Exact source text, found exactly once in `path`."""
    new: str
    tests: tuple[str, ...]
    """Test node ids (files or file::test) that should kill it."""
    why: str = ""
    """What the bug would cost; for survivors, why it is kept as a known gap."""


LOSS = "src/tooltune/train/loss.py"
LOOP = "src/tooltune/train/loop.py"
CKPT = "src/tooltune/train/checkpoint.py"
METRICS = "src/tooltune/evaluate/metrics.py"
INFER = "src/tooltune/inference.py"
BASE = "src/tooltune/formats/base.py"
PACK = "src/tooltune/formats/packing.py"
PRETRAIN = "src/tooltune/train/pretrain.py"

T_LOSS = "tests/test_train_loss.py"
T_RESUME = "tests/test_train_resume.py"
T_VOCAB = "tests/test_inference_vocab.py"
T_FORMATS = "tests/test_formats.py"
T_PACK = "tests/test_formats_packing.py"
T_METRICS = "tests/test_metrics.py"
T_PRETRAIN = "tests/test_train_pretrain.py"

MUTATIONS: list[Mutation] = [
    # ---- checkpoints and resume ------------------------------------------------------------------------------
    Mutation("resume: checkpoint load restores nothing", CKPT,
             '    """Restore everything `save` wrote; returns the progress dict (step, epoch, window, early-stopping state)."""\n',
             '    """Restore everything `save` wrote; returns the progress dict (step, epoch, window, early-stopping state)."""\n'
             '    return {}\n', (T_RESUME,), "a resumed run silently restarts from step 0"),
    Mutation("resume: trainable weights not restored", CKPT,
             "                params[name].copy_(value)", "                pass", (T_RESUME,),
             "the resumed run continues from the initial adapter"),
    Mutation("resume: optimizer state not restored", CKPT,
             '        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=False))\n',
             "", (T_RESUME,), "Adam moments restart at zero"),
    Mutation("resume: RNG state not restored", CKPT,
             "    _set_rng_state(torch.load(rng, weights_only=False))\n", "", (T_RESUME,),
             "dropout masks differ from the uninterrupted run"),
    Mutation("resume: scheduler not restored", CKPT,
             '    scheduler.load_state_dict(state["scheduler"])\n', "", (T_RESUME,),
             "the learning rate restarts its warm-up"),
    Mutation("resume: latest picks the oldest checkpoint", CKPT,
             "return max(steps)[1] if steps else None", "return min(steps)[1] if steps else None", (T_RESUME,),
             "a resume repeats steps already taken"),
    Mutation("early stopping: saves after every evaluation", LOOP,
             "    if prog.best_dev is None or dev_loss < prog.best_dev:\n",
             "    _save_model(accelerator, loss_module, model, tokenizer, run_dir)\n"
             "    if prog.best_dev is None or dev_loss < prog.best_dev:\n", (T_RESUME,),
             "the run dir holds the last, worse adapter"),
    Mutation("early stopping: patience off by one", LOOP,
             "prog.bad_evals >= cfg.train.early_stopping", "prog.bad_evals > cfg.train.early_stopping", (T_RESUME,),
             "one evaluation more than asked"),
]


def copy_repo(to: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, to / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        else:
            shutil.copy2(src, to / name)


def apply(root: Path, m: Mutation) -> None:
    path = root / m.path
    text = path.read_text(encoding="utf-8")
    found = text.count(m.old)
    if found != 1:
        raise SystemExit(f"mutation {m.name!r}: its text occurs {found} times in {m.path}, not once")
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")


LOCK = Path("/tmp/tooltune-bench.lock")
"""While this file exists a timing benchmark runs on the machine: wait before each test run."""


def run_tests(root: Path, tests: tuple[str, ...], env: dict) -> tuple[bool, float, str]:
    while LOCK.exists():
        time.sleep(20)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                           *tests], cwd=root, env=env, capture_output=True, text=True)
    summary = [line for line in (proc.stdout + proc.stderr).splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return proc.returncode == 0, time.perf_counter() - started, summary[-1].strip("= ") if summary else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the mutations whose name contains this text (no results file)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.path}]  -> {' '.join(m.tests)}")
        return 0
    data = os.environ.get("TOOLTUNE_DATA") or str(ROOT.parent / "shared" / "data")
    env = {**os.environ, "TOOLTUNE_DATA": data, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # a skip is fine here; the CI skip guard is tested on its own
    rows = []
    with tempfile.TemporaryDirectory(prefix="tooltune-mutations-") as tmp:
        clean = Path(tmp) / "clean"
        copy_repo(clean)
        for m in chosen:  # every mutation's text must be there before anything runs
            if (clean / m.path).read_text(encoding="utf-8").count(m.old) != 1:
                apply(clean, m)  # raises with the count
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        ok, seconds, tail = run_tests(clean, tests, env)
        print(f"unmutated: {'pass' if ok else 'FAIL'} in {seconds:.0f} s ({tail})", flush=True)
        if not ok:
            return 1
        for m in chosen:
            root = Path(tmp) / "mutant"
            shutil.rmtree(root, ignore_errors=True)
            copy_repo(root)
            apply(root, m)
            passed, seconds, tail = run_tests(root, m.tests, env)
            rows.append((m, not passed, seconds))
            print(f"{'killed  ' if not passed else 'SURVIVED'} {m.name} ({seconds:.0f} s; {tail})", flush=True)
    killed = sum(k for _, k, _ in rows)
    print(f"{killed}/{len(rows)} mutants killed")
    if not args.only:
        write_results(rows)
    return 0


def write_results(rows) -> None:
    killed = sum(k for _, k, _ in rows)
    lines = ["# Mutation testing", "",
             "Named mutations of the code where a silent bug costs most (metrics, formats' encode/parse, the training "
             "loss and its fast path, checkpoints and resume, domain-vocabulary decoding), each run against the "
             "tests meant to catch it (`bench/mutations.py`; one exact text replacement in a temporary copy of the "
             "repository, then `pytest -x` on the named test files).", "",
             "```bash", "python bench/mutations.py", "```", "",
             f"**{killed} / {len(rows)} mutants killed.**", "",
             "| mutation | file | tests | result | what the bug would cost |", "|---|---|---|---|---|"]
    for m, k, seconds in rows:
        tests = ", ".join(f"`{Path(t.split('::')[0]).name}`" for t in m.tests)
        lines.append(f"| {m.name} | `{Path(m.path).name}` | {tests} | {'killed' if k else '**survived**'} "
                     f"({seconds:.0f} s) | {m.why} |")
    survivors = [m for m, k, _ in rows if not k]
    lines += ["", "Survivors kept as known gaps: " + ("none." if not survivors else
                                                       "; ".join(f"{m.name} ({m.why})" for m in survivors) + ".")]
    out = ROOT / "bench" / "results" / "mutations.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
