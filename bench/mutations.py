"""Named mutations of the modules where a silent bug costs most, each run against the tests meant to catch it.

Each mutation replaces one exact piece of source text (it must occur exactly once) in a temporary copy of the
repository (src/, tests/, configs/, pyproject.toml), then runs only its test files there with `pytest -x`. A mutant
is killed when the tests fail; it survives when they pass. The unmutated copy is run first against every test file
named below: a mutation score means nothing over tests that already fail.

    python bench/mutations.py                   # every mutation; writes bench/results/mutations.md
    python bench/mutations.py --only resume     # the mutations whose name contains "resume" (no file written)
    python bench/mutations.py --only resume --tests-from ../main   # the same against another checkout's tests
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
COPIED = ("src", "tests", "configs", "bench", "pyproject.toml")


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
PRETRAIN = "src/tooltune/pretrain/model.py"

T_LOSS = "tests/test_train_loss.py"
T_RESUME = "tests/test_train_resume.py"
T_VOCAB = "tests/test_inference_vocab.py"
T_FORMATS = "tests/test_formats.py"
T_PACK = "tests/test_formats_packing.py"
T_METRICS = "tests/test_metrics.py"
T_PRETRAIN = "tests/test_train_pretrain.py"

MUTATIONS: list[Mutation] = [
    # ---- metrics ---------------------------------------------------------------------------------------------
    Mutation("metrics: BLEU without smoothing", METRICS, "smoothing_function=SmoothingFunction().method3",
             "smoothing_function=SmoothingFunction().method1", (T_METRICS,), "BLEU-4 of short replies is off"),
    Mutation("metrics: BLEU on unstripped text", METRICS,
             "hyp, ref = list(hypothesis.strip()), list(reference.strip())",
             "hyp, ref = list(hypothesis), list(reference)", (T_METRICS,), "trailing spaces change the score"),
    Mutation("metrics: list element counted once", METRICS,
             "return sum(int(element in gold) for element in pred)",
             "return len(set(pred) & set(gold))", (T_METRICS,), "duplicated facilities scored unlike the course"),
    Mutation("metrics: string compared as text", METRICS, "return int(pred == gold)",
             "return int(str(pred) == str(gold))", (T_METRICS,), '"300" scored equal to 300'),
    Mutation("metrics: null prediction counts as correct", METRICS,
             "    if pred is None:\n        return 0\n", "    if pred is None:\n        return int(gold is None)\n",
             (T_METRICS,), "a null value scores"),
    Mutation("metrics: predicted slots counted from gold", METRICS,
             "predicted=value_slots(pred[key]) if in_pred else 0,",
             "predicted=value_slots(gold[key]) if in_pred and in_gold else 0,", (T_METRICS,),
             "precision ignores keys the gold lacks"),
    Mutation("metrics: recall over predicted", METRICS,
             "return self.correct / self.gold if self.gold else 0.0",
             "return self.correct / self.predicted if self.predicted else 0.0", (T_METRICS,), "recall = precision"),
    # ---- formats: encode and parse ---------------------------------------------------------------------------
    Mutation("encode: untrained segments get labels", BASE,
             "labels += seg_ids if seg.trainable else [IGNORE_INDEX] * len(seg_ids)", "labels += seg_ids",
             (T_FORMATS + "::test_labels_cover_exactly_the_trainable_spans",), "the prompt is trained"),
    Mutation("encode: trained segment's first token ignored", BASE,
             "labels += seg_ids if seg.trainable else [IGNORE_INDEX] * len(seg_ids)",
             "labels += ([IGNORE_INDEX] + seg_ids[1:]) if seg.trainable else [IGNORE_INDEX] * len(seg_ids)",
             (T_FORMATS + "::test_labels_cover_exactly_the_trainable_spans",), "the first token of a turn is never learnt"),
    Mutation("encode: truncation cuts from the back", BASE,
             "        if head <= k < start:\n            continue\n",
             "        if k >= len(segments) - (start - head):\n            continue\n",
             (T_FORMATS + "::test_truncation_keeps_the_trained_tail_and_whole_segments",), "the trained tail is lost"),
    Mutation("encode: EOS placeholder written as padding", BASE,
             "tid = tokenizer.eos_token_id if seg.text == EOS else single_id(tokenizer, seg.text)",
             "tid = tokenizer.pad_token_id if seg.text == EOS else single_id(tokenizer, seg.text)",
             (T_FORMATS + "::test_labels_cover_exactly_the_trainable_spans",), "the model never learns to stop"),
    Mutation("data show: trained count is the token count", "src/tooltune/commands/data_show.py",
             'counts = f", {len(ex.input_ids)} tokens, {ex.trained_tokens} trained"',
             'counts = f", {len(ex.input_ids)} tokens, {len(ex.labels)} trained"', ("tests/test_formats_cli.py",),
             "the printed trained-token count is wrong"),
    Mutation("llama2: parse keeps the prefix in a reply", "src/tooltune/formats/llama2.py",
             'return ParsedTurn(Assistant(body[len("assistant:"):].strip()), raw=text)',
             'return ParsedTurn(Assistant(body[len("assistant"):].strip()), raw=text)',
             (T_FORMATS + "::test_parse_inverts_render_for_replies",), "every reply scored with a stray colon"),
    Mutation("llama2: stop string ignored", "src/tooltune/formats/llama2.py",
             "        body = cut_at_stop(text, self.stop_strings).strip()\n        if body.startswith(\"search:\"):",
             "        body = text.strip()\n        if body.startswith(\"search:\"):",
             (T_FORMATS + "::test_llama2_reads_a_turn_up_to_the_next_round",),
             "the next round's text leaks into a reply or breaks a call"),
    Mutation("chatglm3: JSON fallback off", "src/tooltune/formats/chatglm3.py",
             "        if args is None:  # some checkpoints", "        if False:  # some checkpoints",
             (T_FORMATS + "::test_chatglm3_reads_generated_text",), "JSON-bodied calls read as empty calls"),
    Mutation("chatglm3: thought not recognised", "src/tooltune/formats/chatglm3.py",
             "            if announced:  # the model announced a call and stopped",
             "            if False:  # the model announced a call and stopped", (T_FORMATS,),
             "an announced call scored as a reply (known gap if it survives: only parse_never_raises feeds it)"),
    Mutation("pack: prompts trained", PACK, "row[\"labels\"] += [IGNORE_INDEX] + ex.labels[1:]",
             "row[\"labels\"] += [IGNORE_INDEX] + ex.input_ids[1:]", (T_PACK,), "packing trains every token"),
    Mutation("pack: example start predicted from the previous one", PACK,
             "row[\"labels\"] += [IGNORE_INDEX] + ex.labels[1:]", "row[\"labels\"] += ex.labels", (T_PACK,),
             "a cross-example target"),
    Mutation("score: slot precision and recall swapped", "src/tooltune/evaluate/score.py",
             '"slot_p": _pct(slots.precision), "slot_r": _pct(slots.recall)',
             '"slot_p": _pct(slots.recall), "slot_r": _pct(slots.precision)', ("tests/test_eval_cli.py",),
             "the report's P and R columns trade places"),
    Mutation("levers: the rank lever's alpha", "bench/levers.py", '["method.r=64", "method.alpha=128"]',
             '["method.r=64", "method.alpha=64"]', ("tests/test_bench_levers.py",),
             "a lever measures another setting than its row names"),
    # ---- the training loss and its fast path -----------------------------------------------------------------
    Mutation("loss: targets not shifted", LOSS, "targets = labels[:, 1:]  # the token at t is predicted from position t-1",
             "targets = labels[:, :-1]", (T_LOSS,), "the model learns to copy its input"),
    Mutation("loss: soft-capping skipped", LOSS, "    return torch.tanh(logits / cap) * cap if cap else logits",
             "    return logits", (T_LOSS,), "Gemma trains on another loss than it decodes with"),
    Mutation("loss: fast-path check always agrees", LOSS,
             "    return abs(fast - plain) <= (2e-2 if low_precision else 1e-4) * max(1.0, abs(plain)), fast, plain",
             "    return True, fast, plain", (T_LOSS,), "a model whose head does more trains on the wrong loss"),
    Mutation("loss: fallback does not switch paths", LOOP, "    module.plain = True\n    why = ",
             "    why = ", (T_LOSS,), "the fallback is reported but not used"),
    Mutation("loss: weights ignored", LOSS, "        return (per_token * row_weight).sum(), keep.sum()",
             "        return per_token.sum(), keep.sum()", ("tests/test_curation_balance.py",),
             "data.loss_weights has no effect"),
    Mutation("loop: accumulation averages micro-batch means", LOOP, "            loss = s * scale",
             "            loss = s / max(1, int((batch['labels'][:, 1:] != -100).sum())) / len(batches)", (T_LOSS,),
             "long and short batches weigh the same"),
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
             "for _, path in steps:", "for _, path in reversed(steps):", (T_RESUME,),
             "a resume repeats steps already taken"),
    Mutation("resume: data position not restored", LOOP, "        for window in windows[prog.window:]:",
             "        for window in windows:", (T_RESUME,), "a resumed epoch repeats its first batches"),
    Mutation("early stopping: saves after every evaluation", LOOP,
             "    if prog.best_dev is None or dev_loss < prog.best_dev:\n",
             "    _save_model(accelerator, loss_module, model, tokenizer, run_dir)\n"
             "    if prog.best_dev is None or dev_loss < prog.best_dev:\n", (T_RESUME,),
             "the run dir holds the last, worse adapter"),
    Mutation("early stopping: patience off by one", LOOP,
             "prog.bad_evals >= cfg.train.early_stopping", "prog.bad_evals > cfg.train.early_stopping", (T_RESUME,),
             "one evaluation more than asked"),
    # ---- pre-training --------------------------------------------------------------------------------------
    Mutation("pretrain: dev documents also trained on", PRETRAIN,
             "train_docs = [d for i, d in enumerate(docs) if i % cfg.corpus.dev_every]", "train_docs = docs",
             (T_PRETRAIN,), "dev perplexity measured on trained text"),
    Mutation("pretrain: targets shifted by one more", PRETRAIN, "return [Example(row, list(row)) for row in rows if len(row) > 1]",
             "return [Example(row, list(row[1:]) + [-100]) for row in rows if len(row) > 1]", (T_PRETRAIN,),
             "the model learns the token after next"),
    # ---- domain-vocabulary decoding ------------------------------------------------------------------------
    Mutation("vocab: evaluation ignores its vocabulary", "src/tooltune/evaluate/run.py",
             "constrained=options.constrained, copy_values=copy_values, output_vocab=vocab,",
             "constrained=options.constrained, copy_values=copy_values, output_vocab=None,",
             (T_VOCAB, "tests/test_demo.py::test_an_untrained_model_folder_is_evaluated_with_the_vocabulary_of_a_"
                       "given_training_file"),
             "eval's and the demo's figures claim a vocabulary that decoding did not use"),
    Mutation("vocab: prompt ids not allowed", INFER,
             "allowed = set(self.config.output_vocab).union(self.end_ids, *prompts) - set(self.suppressed)",
             "allowed = set(self.config.output_vocab).union(self.end_ids) - set(self.suppressed)", (T_VOCAB,),
             "a hotel name from the results cannot be copied"),
    Mutation("vocab: other ids get zero, not the lowest logit", INFER,
             "out = sub.new_full((*sub.shape[:-1], self.vocab_size), torch.finfo(sub.dtype).min)",
             "out = sub.new_zeros((*sub.shape[:-1], self.vocab_size))", (T_VOCAB,), "ids outside the vocabulary win"),
    Mutation("vocab: head bias left out", INFER, "        sub = torch.nn.functional.linear(hidden, self.weight_rows, self.bias_rows)",
             "        sub = torch.nn.functional.linear(hidden, self.weight_rows)", (T_VOCAB,),
             "an adapter on the head computes other logits"),
    Mutation("vocab: domain vocabulary from the first dialogue only", INFER,
             "    for dialogue in dialogues:\n        for sample in fmt.render(with_argument_order(dialogue, argument_order), observation=observation):",
             "    for dialogue in dialogues[:1]:\n        for sample in fmt.render(with_argument_order(dialogue, argument_order), observation=observation):",
             (T_VOCAB, "tests/test_demo.py::test_an_untrained_model_folder_is_evaluated_with_the_vocabulary_of_a_given_training_file"),
             "the vocabulary misses most of the training data"),
]


def copy_repo(to: Path, tests_from: Path = ROOT) -> None:
    for name in COPIED:
        src = (tests_from if name == "tests" else ROOT) / name
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


def run_tests(root: Path, tests: tuple[str, ...], env: dict) -> tuple[bool, float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", "-W", "ignore",
                           *tests], cwd=root, env=env, capture_output=True, text=True)
    summary = [line for line in (proc.stdout + proc.stderr).splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return proc.returncode == 0, time.perf_counter() - started, summary[-1].strip("= ") if summary else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="run the mutations whose name contains TEXT (repeatable; no results file)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--tests-from", type=Path, default=ROOT, metavar="REPO",
                        help="take tests/ from another checkout (say, before a test was strengthened; no file written)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or any(text in m.name for text in args.only)]
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
        copy_repo(clean, args.tests_from)
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
            copy_repo(root, args.tests_from)
            apply(root, m)
            passed, seconds, tail = run_tests(root, m.tests, env)
            rows.append((m, not passed, seconds))
            print(f"{'killed  ' if not passed else 'SURVIVED'} {m.name} ({seconds:.0f} s; {tail})", flush=True)
    killed = sum(k for _, k, _ in rows)
    print(f"{killed}/{len(rows)} mutants killed")
    if not args.only and args.tests_from == ROOT:
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
