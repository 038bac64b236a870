"""Training examples in, padded batches out: reading, checking, length-grouped batch order, collation.

An example (`tooltune.formats.Example`) is `{"input_ids": [int], "labels": [int]}` with labels = `IGNORE_INDEX` where
not trained, aligned with input_ids (shifted only inside the loss); packed rows also carry `position_ids` restarting
at 0 for each packed sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tooltune.curation.balance import loss_weights
from tooltune.datafiles import read_dialogues
from tooltune.datafiles.records import read_jsonl
from tooltune.dialogue import with_argument_order
from tooltune.errors import InputError
from tooltune.formats import Example, encode_all, ensure_special_tokens, get_format
from tooltune.formats import packing
from tooltune.formats.packing import length_grouped_batches, random_batches


@dataclass
class Dropped:
    """What was left out of a dataset, and why; reported, never silent."""
    too_long: int = 0
    no_target: int = 0
    truncated: int = 0
    """Kept, with whole turns cut from the front to fit data.max_length."""
    where: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.too_long} too long for data.max_length, {self.no_target} without a trained token"
                + (f" ({self.truncated} more kept with early turns cut)" if self.truncated else ""))


def _int_list(value, where: str, key: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InputError("must be a list of integers", where=where, field=key)
    return value


def example_from_dict(row, where: str) -> Example:
    if not isinstance(row, dict):
        raise InputError("an example must be a JSON object", where=where)
    for key in ("input_ids", "labels"):
        if key not in row:
            raise InputError("missing", where=where, field=key)
    ids, labels = _int_list(row["input_ids"], where, "input_ids"), _int_list(row["labels"], where, "labels")
    if len(ids) != len(labels):
        raise InputError(f"has {len(labels)} entries for {len(ids)} input_ids", where=where, field="labels")
    pos = row.get("position_ids")
    if pos is not None and len(_int_list(pos, where, "position_ids")) != len(ids):
        raise InputError("must be as long as input_ids", where=where, field="position_ids")
    return Example(ids, labels, position_ids=pos)


def keep_trainable(examples: list[Example], max_length: int, where: list[str] | None = None
                   ) -> tuple[list[Example], Dropped]:
    """Examples that fit and train something; the others are counted in `Dropped` (with their places)."""
    kept, dropped = [], Dropped()
    for i, ex in enumerate(examples):
        if len(ex.input_ids) > max_length:
            dropped.too_long += 1
        elif ex.trained_tokens == 0:
            dropped.no_target += 1
        else:
            kept.append(ex)
            continue
        dropped.where.append(where[i] if where else f"example {i}")
    return kept, dropped


def read_examples(path: str | Path) -> tuple[list[Example], list[str]]:
    """Encoded examples from a JSONL file, with each one's `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", where=str(path))
    examples, places = [], []
    for where, row in read_jsonl(path):
        examples.append(example_from_dict(row, where))
        places.append(where)
    return examples, places


def render_dialogues(path: str | Path, data_cfg, tokenizer, weighted: bool = False) -> tuple[list[Example], Dropped]:
    """Dialogues read by `tooltune.datafiles`, rendered by the chat format `data_cfg.format` and encoded: the one step
    that joins the formats to training. The tokenizer gets the format's special tokens (see `new_token_ids`)."""
    fmt = get_format(data_cfg.format).for_tokenizer(tokenizer)
    ensure_special_tokens(tokenizer, fmt.special_tokens)
    samples, places, weights = [], [], []
    dialogues = read_dialogues(path)
    per_dialogue = [1.0] * len(dialogues)
    if weighted and data_cfg.loss_weights:
        per_dialogue = loss_weights(dialogues, data_cfg.loss_weights)
    for i, dialogue in enumerate(dialogues):
        ordered = with_argument_order(dialogue, data_cfg.argument_order)
        for sample in fmt.render(ordered, policy=data_cfg.policy, observation=data_cfg.observation,
                                 call_weight=data_cfg.call_weight if weighted else 1.0):
            samples.append(sample)
            places.append(f"{path}: dialogue {i + 1}")
            weights.append(per_dialogue[i])  # every sample of a dialogue carries its dialogue's weight
    report = encode_all(samples, tokenizer, max_length=data_cfg.max_length)
    dropped = Dropped(truncated=len(report.truncated))
    for i, why in report.dropped:
        dropped.where.append(f"{places[i]}: {why}")
        if "no trained token" in why:
            dropped.no_target += 1
        else:
            dropped.too_long += 1
    gone = {i for i, _ in report.dropped}
    kept = [i for i in range(len(samples)) if i not in gone]  # encode_all keeps the others in order
    return [Example(list(e.input_ids), list(e.labels), weights=e.weights, weight=weights[i])
            for i, e in zip(kept, report.examples)], dropped


def load_split(path: str, data_cfg, tokenizer, pack: bool = False, weighted: bool = False
               ) -> tuple[list[Example], Dropped]:
    """One split ready to batch: rendered dialogues (data.format set) or encoded examples; packed when asked;
    `weighted`: examples carry data.loss_weights and data.call_weight (the training split only: the dev loss stays
    unweighted)."""
    if data_cfg.format:
        examples, dropped = render_dialogues(path, data_cfg, tokenizer, weighted)
    else:
        examples, places = read_examples(path)
        examples, dropped = keep_trainable(examples, data_cfg.max_length, places)
    return (packing.pack(examples, data_cfg.max_length) if pack else examples), dropped


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """This epoch's batches (lists of example indices), the same for the same (seed, epoch) on every process.

    Length grouping (`tooltune.formats.packing.length_grouped_batches`, mega-batches of 64 batches): little padding,
    and the order still changes every epoch; else plain shuffled batches.
    """
    epoch_seed = seed * 1_000_003 + epoch
    if group_by_length:
        return length_grouped_batches(lengths, batch_size, epoch_seed, mega_batches=64)
    return random_batches(len(lengths), batch_size, epoch_seed)
