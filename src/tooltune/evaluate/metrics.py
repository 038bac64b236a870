"""The course's metrics, as pure functions of one prediction and its gold (see the course reference: `../shared/REFERENCE.md` beside the repository).

Everything here returns fractions in [0, 1] (a recall can exceed 1, see `slot_counts`); the report multiplies by 100.
The definitions follow the course's evaluator (agiclass/fine-tuning-lab, `common/evaluator.py`) line for line:

- BLEU-4: strip both strings, split into single characters, nltk `sentence_bleu` with smoothing method3 and the
  default weights (0.25 each); an empty hypothesis or reference scores 0. An exact "好的" scores 0.5946: with only
  two characters there are no 3- and 4-grams, and method3 smooths those precisions to 1/2 and 1/4.
- Slots: one slot per scalar value, one per list element. A predicted scalar is correct iff `pred == gold` (so
  300 == 300.0 but "300" != 300); a predicted list element iff it is `in` the gold list, counted once per occurrence
  (a duplicated correct element counts twice, so recall can pass 1 as it can in the course). A predicted key whose
  value is null is counted as a predicted slot and is never correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu


def char_bleu4(hypothesis: str, reference: str) -> float:
    """Character BLEU-4 of one reply, in [0, 1]; 0 when either side is empty after stripping."""
    hyp, ref = list(hypothesis.strip()), list(reference.strip())
    if not hyp or not ref:
        return 0.0
    return float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method3))


@dataclass(frozen=True)
class SlotCounts:
    """Counts behind micro-averaged slot precision and recall; add them up over turns."""

    correct: int = 0
    predicted: int = 0
    gold: int = 0

    def __add__(self, other: "SlotCounts") -> "SlotCounts":
        return SlotCounts(self.correct + other.correct, self.predicted + other.predicted, self.gold + other.gold)

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def value_slots(value: Any) -> int:
    """How many slots one argument value holds: a list counts its elements, anything else (null too) counts 1."""
    return len(value) if isinstance(value, list) else 1


def value_correct(pred: Any, gold: Any) -> int:
    """How many slots of the predicted value `pred` are correct against the gold value `gold` of the same key.

    Where the gold value is not a list and the prediction is, the course would test `element in gold` (a substring
    test for a string, a TypeError for a number); a list element is compared with `==` there instead.
    """
    if pred is None:
        return 0
    if not isinstance(pred, list):
        return int(pred == gold)
    if isinstance(gold, list):
        return sum(int(element in gold) for element in pred)
    return sum(int(element == gold) for element in pred)


def slot_counts_by_key(pred: Mapping[str, Any] | None, gold: Mapping[str, Any]) -> dict[str, SlotCounts]:
    """Slot counts of one call turn, per argument key; `pred=None` (no call predicted) counts as `{}`."""
    pred = pred or {}
    counts: dict[str, SlotCounts] = {}
    for key in dict.fromkeys([*gold, *pred]):  # gold keys first, each key once
        in_pred, in_gold = key in pred, key in gold
        counts[key] = SlotCounts(
            correct=value_correct(pred[key], gold[key]) if in_pred and in_gold else 0,
            predicted=value_slots(pred[key]) if in_pred else 0,
            gold=value_slots(gold[key]) if in_gold else 0,
        )
    return counts


def slot_counts(pred: Mapping[str, Any] | None, gold: Mapping[str, Any]) -> SlotCounts:
    """Slot counts of one call turn (the course's `_slot_accuracy`); `pred=None` counts as `{}`."""
    return sum(slot_counts_by_key(pred, gold).values(), SlotCounts())


ROUGE_KEYS = ("rouge-1", "rouge-2", "rouge-l")


def rouge_words(hypothesis: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-scores on jieba words, in [0, 1], as LLaMA-Factory reports them (`rouge-chinese`).

    Not a course metric. Either side without a word scores 0 on all three, as in LLaMA-Factory.
    """
    import jieba  # imported here: loading its dictionary takes about a second, and only ROUGE needs it
    from rouge_chinese import Rouge

    hyp, ref = " ".join(jieba.cut(hypothesis)), " ".join(jieba.cut(reference))
    if not hyp.split() or not ref.split():
        return dict.fromkeys(ROUGE_KEYS, 0.0)
    scores = Rouge().get_scores(hyp, ref)[0]
    return {key: float(scores[key]["f"]) for key in ROUGE_KEYS}


def quiet_jieba() -> None:
    """Silence jieba's dictionary-loading chatter on stderr (it logs at DEBUG by default)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
