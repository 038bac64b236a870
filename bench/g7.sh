#!/usr/bin/env bash
# Run G7: the 2-hour CPU model (issue: the model that beats the lecture and the rules baseline).
#
#   bash bench/g7.sh [OUT [OVERRIDES...]]   (default runs/g7; run alone on an idle machine)
#
# OVERRIDES are appended to G7's settings (the later value wins), so a run that tries one lever names only that
# lever: `bash bench/g7.sh runs/g8 data.call_weight=3`.
#
# G4's configuration (LoRA r=16 alpha 32 on every linear layer, lr 1e-3, schema argument order, llama2 format with
# compact observations, batch 4, seed 0) with the training-speed levers chosen on dev (bench/results/quality.md,
# "Training-speed levers on dev"): bf16 where native (model.dtype auto), adapters on the top 8 of 18 layers with the
# frozen layers' output cached, the domain output vocabulary, no dropout. 8 epochs (3,208 steps) with the dev loss
# evaluated and a checkpoint written after each epoch (401 steps); the adapter kept is the one of the best dev loss.
# train.max_minutes caps the steps so that the whole run, loading and saving included, stays within 120 minutes
# whatever this machine's speed. The wall clock of the whole command is written to OUT/wall_s.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/g7}
shift || true
export PYTHONPATH=src
py=${PYTHON:-.venv/bin/python}
base=${BASE:-$HOME/.cache/tooltune/models/gemma3-270m}
start=$(date +%s.%N)
$py -m tooltune train configs/lora.yaml model.path="$base" model.dtype=auto train.mixed_precision=no \
  data.format=llama2 data.observation=compact data.argument_order=schema \
  "method.target_modules=[all-linear]" method.r=16 method.alpha=32 method.dropout=0.0 method.layers=top:8 \
  train.cache_frozen=true train.output_vocab=domain train.batch_size=4 train.grad_accum=1 train.lr=1e-3 \
  train.warmup_steps=30 train.epochs=8 train.max_minutes=110 train.eval_every=401 train.early_stopping=0 \
  train.save_every=401 train.log_every=10 train.seed=0 train.out="$out" "$@"
end=$(date +%s.%N)
python3 -c "print(round($end - $start, 1))" > "$out/wall_s"
echo "$out: trained in $(cat "$out/wall_s") s (loading and saving included)"
