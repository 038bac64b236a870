"""Evaluation: units to predict (`units`), the predictions file (`predictions`), the course's metrics as pure
functions (`metrics`), scoring a run (`score`) and the comparison table (`report`).

The stage joins through files: `eval` writes `predictions.jsonl` and `metrics.json` into a run directory;
`tooltune report` reads them back. Submodules are imported explicitly (nltk and jieba load slowly).
"""
