#!/usr/bin/env bash
# The training-speed levers on dev: what each costs or buys in quality, at equal steps and at equal wall clock.
#
#   bash bench/speed_levers_dev.sh NAME STEPS [key.path=value ...]
#
# Trains run G6's configuration (G4's settings: LoRA r=16 on every linear layer, lr 1e-3, schema-ordered arguments,
# llama2 format with compact observations, batch 4, seed 0) for STEPS optimizer steps with the given overrides into
# runs/speed/NAME, then scores the first 150 dev turn units exactly as G4 and G6 were scored (greedy, domain
# vocabulary, float32 decoding so that only training differs), into runs/speed/NAME-dev. The training wall clock
# (loading and saving included) is written to runs/speed/NAME/wall_s. Run one at a time on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; steps=$2; shift 2
export PYTHONPATH=src
py=${PYTHON:-.venv/bin/python}
base=${BASE:-$HOME/.cache/tooltune/models/gemma3-270m}
data=${DATA:-../shared/data/hotel/v3_chatglm3_llama2}
out=runs/speed/$name
start=$(date +%s.%N)
$py -m tooltune train configs/lora.yaml model.path="$base" model.dtype=float32 train.mixed_precision=no \
  data.format=llama2 data.observation=compact data.argument_order=schema data.dev= train.max_steps="$steps" \
  train.grad_accum=1 train.batch_size=4 train.lr=1e-3 train.warmup_steps=10 train.log_every=5 train.eval_every=0 \
  train.save_every=0 train.out="$out" "method.target_modules=[all-linear]" method.r=16 method.alpha=32 "$@"
end=$(date +%s.%N)
python3 -c "print(round($end - $start, 1))" > "$out/wall_s"
$py -m tooltune eval "$out" --data "$data/dev.chatglm3.jsonl" --out "$out-dev" --limit 150 --max-new-tokens 160 \
  --batch-size 16 --domain-vocab --dtype float32
echo "$name: trained in $(cat "$out/wall_s") s"
