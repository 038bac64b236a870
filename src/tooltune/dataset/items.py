"""What flows between the build stages: dialogues that remember where they came from, and what was removed."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tooltune.dialogue import Dialogue, Turn


@dataclass(frozen=True)
class Item:
    """One dialogue of the dataset being built."""

    dialogue: Dialogue
    source: str
    """The file it came from, relative to the data dir (`crosswoz/test.json.zip`), or `generated:<kind>`."""
    index: str
    """Its place in `source`: a list index, or `<dialogue id>/<k>` for the k-th hotel part of a CrossWOZ dialogue."""
    augments: tuple[str, ...] = ()
    """Names of the augmentations applied to it, in order (`qa`, `closing`, `paraphrase`, ...)."""

    @property
    def where(self) -> str:
        return f"{self.source}#{self.index}"

    def with_turns(self, turns: list[Turn] | tuple[Turn, ...], augment: str | None = None) -> "Item":
        """A copy with new turns (order checked again), recording `augment` when given."""
        dialogue = Dialogue(tuple(turns), tools=self.dialogue.tools, id=self.dialogue.id, where=self.where)
        return replace(self, dialogue=dialogue, augments=self.augments + ((augment,) if augment else ()))


@dataclass(frozen=True)
class Removed:
    """A dialogue (or source part) left out of the dataset, and why: every one is listed in the report."""

    source: str
    index: str
    reason: str
    """A short fixed phrase, counted in the report (`exact duplicate`, `unknown hotel`, ...)."""
    detail: str = ""
    """What exactly: the offending value, or the dialogue it duplicates."""
    kept: bool = False
    """True for a dialogue kept in a shortened form (cut before the turn it could not map): listed, not removed."""


def make_item(turns: list[Turn], source: str, index: str) -> Item:
    where = f"{source}#{index}"
    return Item(Dialogue(tuple(turns), id=where, where=where), source, index)
