"""Evaluation: `evaluate_run` (`run`, the one way a run and dialogues become predictions and metrics), units to
predict (`units`), the predictions file (`predictions`, and `partial` while it is generated), the course's metrics
as pure functions (`metrics`), scoring rows (`score`) and the comparison table (`report`).

The stage joins through files: `eval` writes `predictions.jsonl` and `metrics.json` into a run directory;
`tooltune report` reads them back. Submodules are imported explicitly (nltk and jieba load slowly).
"""
