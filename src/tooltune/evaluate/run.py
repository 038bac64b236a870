"""Evaluating a run: the one place that turns a run (or a model folder) and dialogues into predictions and metrics.

`evaluate_run(run, data, options)` loads the run, builds its `Generator`, makes the units (`units.py`), predicts
them in turn or dialogue mode, scores the rows (`score.py`) and, given `options.out`, writes `predictions.jsonl`
and `metrics.json` (resumable through `predictions.partial.jsonl`, `partial.py`). `tooltune eval`, the demo, k-fold
and the bench scripts all call it, so the metadata in `metrics.json` is the same for each: what was evaluated and
every setting that decides the predictions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooltune.datafiles import read_dialogues
from tooltune.db import HotelDB
from tooltune.dialogue import MAX_NEW_TOKENS, Dialogue
from tooltune.errors import InputError, ToolTuneError
from tooltune.evaluate.partial import PARTIAL_FILE, PartialPredictions
from tooltune.evaluate.predictions import PREDICTIONS_FILE, Row, write_predictions
from tooltune.evaluate.report import write_metrics
from tooltune.evaluate.score import hoteldb_search, score
from tooltune.evaluate.units import MODES, Unit, eval_units, predict_dialogue, unit_id
from tooltune.formats import get_format
from tooltune.inference import GenerationConfig, Generator, domain_vocab
from tooltune.runs import Loaded, load_for_inference, training_data

SAMPLED_TEMPERATURE = 0.7
"""The temperature of draws when `samples` is above 1 and none is given."""


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate; the defaults are `tooltune eval`'s."""

    mode: str = "turn"
    """turn: each unit sees the gold history (the course's definition); dialogue: the model's own outputs fed back."""
    limit: int | None = None
    """Only the first N units (turn mode) or dialogues (dialogue mode); None or 0: all."""
    split: str | None = None
    """The name in unit ids (`split:dialogue:turn`); default the data file's stem, or "eval" for dialogues given."""
    format: str | None = None
    """Chat format; default the run's (a plain model folder needs one)."""
    observation: str | None = None
    """How results are rendered; default the run's."""
    dtype: str = "auto"
    """Model dtype name, or auto (the run's own, else bfloat16 where bf16 is native, else float32)."""
    batch_size: int = 8
    """Histories decoded together."""
    max_new_tokens: int = MAX_NEW_TOKENS
    """Tokens generated per turn at most."""
    max_prompt_tokens: int | None = None
    """Longer prompts lose their oldest turns; None: `GenerationConfig`'s default (always within the model's
    positions less `max_new_tokens`)."""
    constrained: bool = False
    """Generate call arguments under the tool's schema."""
    copy: bool = False
    """With `constrained`: free strings of a call are spans of the user's words or names of the hotel database."""
    db: str | None = None
    """The hotel database for `copy` and task success (default: the cache's, built from `data_dir`)."""
    data_dir: str | None = None
    """The data dir the hotel database is built from (default: `tooltune.paths.data_dir`)."""
    domain_vocab: bool = False
    """Generate only tokens of the training data or of the prompt."""
    vocab_data: str | Path | Sequence[Dialogue] | None = None
    """With `domain_vocab`: the dialogues whose tokens may be generated (a file, or dialogues); default the run's
    own training data."""
    samples: int = 1
    """Above 1: minimum Bayes risk among the greedy turn and `samples - 1` draws."""
    temperature: float | None = None
    """0: greedy; None: 0, or `SAMPLED_TEMPERATURE` with `samples` above 1."""
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    """Seeds each batch's draws."""
    reuse_prefix: bool = True
    """The turn units of a dialogue take their prompt's KV cache from one read of its longest prompt
    (`tooltune.prefix`); False: every prompt is read in its own batch."""
    continuous: bool = True
    """Greedy decoding with continuous batching (`tooltune.continuous`): a unit that ends leaves its batch and the
    next takes its place; False: fixed batches, each until its longest unit ends."""
    task_success: bool = True
    """Run the predicted calls on the hotel database (a metric beyond the course's)."""
    rouge: bool = True
    """Score ROUGE on jieba words too (loads jieba)."""
    out: str | Path | None = None
    """Where predictions.jsonl and metrics.json go; None: nothing is written."""
    resume: bool = False
    """Continue an interrupted evaluation into `out` from its predictions.partial.jsonl."""
    progress: bool = False
    """Show a progress bar and say what is being done."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r} (expected one of {', '.join(MODES)})", field="mode")
        if self.copy and not self.constrained:
            raise ToolTuneError("--copy works through constrained decoding: add --constrained")
        if self.resume and self.out is None:
            raise ToolTuneError("resuming an evaluation needs its output folder")
        self.sampling()  # settings that cannot go together are refused before any slow loading

    @property
    def sampled_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return SAMPLED_TEMPERATURE if self.samples > 1 else 0.0

    def sampling(self) -> dict[str, Any]:
        """The `GenerationConfig` fields of decoding (checked by building one)."""
        fields = {"samples": self.samples, "temperature": self.sampled_temperature, "top_p": self.top_p,
                  "top_k": self.top_k, "seed": self.seed}
        GenerationConfig(**fields)
        return fields

    def decoding(self) -> dict[str, Any]:
        """How tokens were chosen, for metrics.json."""
        drawn = {"temperature": self.sampled_temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}
        if self.samples > 1:
            kind = {"kind": "minimum Bayes risk", "samples": self.samples, **drawn}
        elif self.sampled_temperature > 0:
            kind = {"kind": "sampled", **drawn}
        else:
            kind = {"kind": "greedy"}
        return {**kind, "prefix_reuse": self.reuse_prefix,
                "continuous_batching": self.continuous and kind["kind"] == "greedy" and not self.constrained}


SETTINGS = ("mode", "limit", "format", "observation", "split", "batch_size", "max_new_tokens", "dtype", "constrained",
            "copy", "db", "domain_vocab", "samples", "temperature", "top_p", "top_k", "seed")
"""The options that decide the predictions (with the run and the data): a resumed evaluation must have the same."""


@dataclass
class EvalResult:
    rows: list[Row]
    """One scored row per unit, in unit order."""
    meta: dict[str, Any]
    """What was evaluated and how (metrics.json's keys besides `metrics`)."""
    metrics: dict[str, Any]
    """`score(rows)`."""
    loaded: Loaded
    generator: Generator
    """The generator used (its counters: prompts cut, constraint time, calls left unconstrained)."""
    predictions: list[Any] = field(default_factory=list)
    """Turn mode: the generator's predictions, one per unit (None for a unit resumed from the partial file)."""
    seconds: float = 0.0
    """Generation time."""


def evaluate_run(run: str | Path | Loaded, data: str | Path | Sequence[Dialogue] | Sequence[Unit],
                 options: EvalOptions = EvalOptions()) -> EvalResult:
    """Predict and score `data` (a dialogue file, dialogues, or turn units) with `run` (a run directory, a model
    folder, or one already loaded); writes predictions.jsonl and metrics.json when `options.out` is set."""
    vocab_data = _vocab_data(run, options)  # the data first: a bad file fails before any (slow) loading
    work = _Work.of(data, options)
    copy_values = HotelDB.open(options.db, options.data_dir).known_values() if options.copy else None
    loaded = run if isinstance(run, Loaded) else load_for_inference(
        run, format=options.format, observation=options.observation, dtype=options.dtype)
    fmt = get_format(loaded.format)
    vocab = None
    if vocab_data is not None:
        dialogues = read_dialogues(vocab_data) if isinstance(vocab_data, (str, Path)) else vocab_data
        vocab = domain_vocab(dialogues, loaded.tokenizer, fmt, loaded.observation, loaded.argument_order)
        if options.progress:
            print(f"output vocabulary: {len(vocab):,} token ids of {_vocab_name(vocab_data)}, plus each prompt's own")
    limits = {"max_prompt_tokens": options.max_prompt_tokens} if options.max_prompt_tokens is not None else {}
    config = loaded.generation(max_new_tokens=options.max_new_tokens, batch_size=options.batch_size,
                               constrained=options.constrained, copy_values=copy_values, output_vocab=vocab,
                               reuse_prefix=options.reuse_prefix, continuous=options.continuous, **limits, **options.sampling())
    generator = Generator(loaded.model, loaded.tokenizer, fmt, config=config)
    result = _predict(_run_name(run, loaded), data, work, loaded, generator, options)
    result.meta = _meta(_run_name(run, loaded), data, loaded, generator, result, options, vocab, vocab_data)
    search = hoteldb_search(options.db, options.data_dir) if options.task_success else None
    if options.out is None:
        result.metrics = score(result.rows, search=search, rouge=options.rouge)
        return result
    out = Path(options.out)
    write_predictions(out / PREDICTIONS_FILE, result.rows)
    result.metrics = write_metrics(out, result.rows, result.meta, search=search, rouge=options.rouge)["metrics"]
    (out / PARTIAL_FILE).unlink(missing_ok=True)  # the final files are written: what was kept for a resume goes
    return result


@dataclass
class _Work:
    """What to predict: turn units, or dialogues to walk; and every unit's gold turn by id."""

    split: str
    units: list[Unit]
    dialogues: list[Dialogue]
    golds: dict[str, Any]

    @classmethod
    def of(cls, data: Any, options: EvalOptions) -> _Work:
        given_units = not isinstance(data, (str, Path)) and bool(data) and isinstance(data[0], Unit)
        if given_units and options.mode != "turn":
            raise ToolTuneError("dialogue mode walks whole dialogues: give dialogues, not units")
        split = options.split or (Path(data).name.split(".")[0] if isinstance(data, (str, Path)) else "eval")
        limit = options.limit or None
        if given_units:
            units: list[Unit] = list(data)[:limit]
            return cls(split, units, [], {u.id: u.gold for u in units})
        dialogues = read_dialogues(data) if isinstance(data, (str, Path)) else list(data)
        if options.mode == "turn":
            units = eval_units(dialogues, split=split)[:limit]
            return cls(split, units, [], {u.id: u.gold for u in units})
        dialogues = dialogues[:limit]
        golds = {unit_id(split, i, t): d.turns[t] for i, d in enumerate(dialogues) for t in d.targets()}
        return cls(split, [], dialogues, golds)


def _run_name(run: Any, loaded: Loaded) -> str:
    return loaded.model_name if isinstance(run, Loaded) else str(run)


def _vocab_data(run: Any, options: EvalOptions) -> Any:
    if not options.domain_vocab:
        return None
    if options.vocab_data is not None:
        return options.vocab_data
    if isinstance(run, Loaded):
        raise ToolTuneError("a loaded model has no run to take the domain vocabulary from: give vocab_data")
    return training_data(run)


def _vocab_name(vocab_data: Any) -> str:
    return str(vocab_data) if isinstance(vocab_data, (str, Path)) else f"{len(vocab_data)} given dialogues"


def _predict(run_name: str, data: Any, work: _Work, loaded: Loaded, generator: Generator, options: EvalOptions
             ) -> EvalResult:
    """The rows of every unit (those done before taken from the partial file when resuming), written to the partial
    file as they are generated when `options.out` is set."""
    partial = None
    done: dict[str, Row] = {}
    if options.out is not None:
        settings = {"run": run_name, "data": _data_name(data), **{key: getattr(options, key) for key in SETTINGS},
                    "temperature": options.sampled_temperature}
        partial = PartialPredictions(Path(options.out), settings)
        done = _resume(partial, work.golds, options)
        partial.open(done.values())
    result = EvalResult([], {"resumed_units": len(done)}, {}, loaded, generator)
    started = time.perf_counter()
    try:
        if options.mode == "turn":
            _predict_turns(generator, work.units, done, partial, result, options.progress)
        else:
            _predict_dialogues(generator, work.dialogues, work.split, done, partial, result)
    finally:
        if partial is not None:
            partial.close(finished=False)
    result.seconds = time.perf_counter() - started
    return result


def _resume(partial: PartialPredictions, golds: dict, options: EvalOptions) -> dict[str, Row]:
    if options.resume:
        done, cut = partial.resume(golds)
        print(f"resuming: {len(done)} of {len(golds)} units already predicted in {partial.path}"
              + (f" ({cut} line cut short by the interruption dropped; redone)" if cut else ""))
        return done
    if partial.path.exists():
        print(f"note: {partial.path} holds an interrupted evaluation; starting afresh (--resume continues it)")
    return {}


def _predict_turns(generator: Generator, units: list[Unit], done: dict[str, Row], partial: PartialPredictions | None,
                   result: EvalResult, progress: bool) -> None:
    def write_batch(batch, preds):
        partial.append([Row(units[i].id, units[i].gold, p.parsed.turn, p.raw) for i, p in zip(batch, preds)])

    preds = generator.predict([u.history for u in units], [u.tools for u in units], progress=progress,
                              skip={i for i, u in enumerate(units) if u.id in done},
                              on_batch=write_batch if partial is not None else None)
    result.predictions = preds
    result.rows = [done[u.id] if p is None else Row(u.id, u.gold, p.parsed.turn, p.raw) for u, p in zip(units, preds)]


def _predict_dialogues(generator: Generator, dialogues: list[Dialogue], split: str, done: dict[str, Row],
                       partial: PartialPredictions | None, result: EvalResult) -> None:
    def generate(history, tools):
        return generator.predict([history], [tools])[0]

    for i, dialogue in enumerate(dialogues):
        ids = [unit_id(split, i, t) for t in dialogue.targets()]
        if all(id_ in done for id_ in ids):
            result.rows += [done[id_] for id_ in ids]
            continue
        new = predict_dialogue(dialogue, generate, split=split, dialogue_index=i)
        if partial is not None:
            partial.append(new)
        result.rows += new


def _data_name(data: Any) -> str:
    if isinstance(data, (str, Path)):
        return str(data)
    return f"{len(data)} given {'units' if data and isinstance(data[0], Unit) else 'dialogues'}"


def _meta(run_name: str, data: Any, loaded: Loaded, generator: Generator, result: EvalResult,
          options: EvalOptions, vocab: frozenset[int] | None, vocab_data: Any) -> dict[str, Any]:
    """metrics.json's record of what was evaluated and how."""
    fmt = get_format(loaded.format)
    malformed = sum(fmt.parse(r.raw).malformed for r in result.rows)
    output_vocab = "all"
    if vocab is not None:
        output_vocab = f"{_vocab_name(vocab_data)}: {len(vocab)} ids of the training data + the prompt's"
    return {"model": loaded.model_name, "method": loaded.method, "mode": options.mode,
            "run": run_name, "data": _data_name(data),
            "format": loaded.format, "observation": loaded.observation, "argument_order": loaded.argument_order,
            "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
            "max_new_tokens": options.max_new_tokens, "max_prompt_tokens": generator.max_prompt,
            "batch_size": options.batch_size, "generation_seconds": round(result.seconds, 1),
            "units": len(result.rows), "prompts_cut_inside_a_segment": generator.prompts_cut_inside,
            "constrained": options.constrained, "copy": options.copy, "decoding": options.decoding(),
            "output_vocab": output_vocab, "malformed_outputs": malformed, "resumed_units": result.meta["resumed_units"],
            "invalid_characters_replaced": generator.replaced_characters}
