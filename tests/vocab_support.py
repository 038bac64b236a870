"""What a model really generated, and which ids a training file holds, for the domain-vocabulary checks.

`record_generation` records every row any `Generator` generates (the eval command and the demo load their model
themselves), as it hands the row's ids to be decoded; `rendered_ids` lists a training file's token ids through the tokenizer's own calls, one
segment at a time, without `tooltune.formats.encode` or `tooltune.inference.domain_vocab`.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def record_generation(monkeypatch) -> list[tuple[list[int], list[int]]]:
    """Every generated row, as (its prompt ids, its new ids), fixed batches and continuous batching alike."""
    from tooltune.inference import Generator

    rows: list[tuple[list[int], list[int]]] = []
    original = Generator._predictions

    def recording(self, new, prompts):
        rows.extend((list(prompt), list(ids)) for ids, prompt in zip(new, prompts))
        return original(self, new, prompts)

    monkeypatch.setattr(Generator, "_predictions", recording)
    return rows


def rendered_ids(dialogues, tokenizer, fmt_name: str, observation: str) -> set[int]:
    """Each segment of each rendered sample through the tokenizer: text by `tokenizer(text)`, a special token by
    `convert_tokens_to_ids` (the format's BOS/EOS placeholders: the tokenizer's own bos/eos)."""
    from tooltune.formats import BOS, EOS, FORMATS

    fmt = FORMATS[fmt_name].for_tokenizer(tokenizer)
    ids: set[int] = set()
    for dialogue in dialogues:
        for sample in fmt.render(dialogue, observation=observation):
            for seg in sample:
                if seg.text == BOS:
                    ids.update(i for i in [tokenizer.bos_token_id] if i is not None)
                elif seg.text == EOS:
                    ids.add(tokenizer.eos_token_id)
                elif seg.special:
                    ids.add(tokenizer.convert_tokens_to_ids(seg.text))
                else:
                    ids.update(tokenizer(seg.text, add_special_tokens=False)["input_ids"])
    return ids


def run_vocabulary(run: Path) -> tuple[set[int], object]:
    """The ids of the run's training file as the run rendered it (its config.yaml), and the run's tokenizer."""
    from transformers import AutoTokenizer

    from tooltune.datafiles import read_dialogues

    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["data"]
    assert config.get("argument_order", "as-written") == "as-written", "rendered_ids renders calls as written"
    tokenizer = AutoTokenizer.from_pretrained(run)
    return rendered_ids(read_dialogues(config["train"]), tokenizer, config["format"], config["observation"]), tokenizer


def outside(rows, allowed: set[int]) -> list[list[int]]:
    """Per generated row, the ids it wrote that are neither in `allowed` nor in its own prompt."""
    return [[i for i in new if i not in allowed and i not in prompt] for prompt, new in rows]
