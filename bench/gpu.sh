#!/usr/bin/env bash
# Training on a CUDA GPU (not runnable on the CPU-only dev machine), in one short run of 6-8 minutes:
#  1) throughput at the anchor's setting: tooltune (eager, and with train.compile) vs HF Trainer + PEFT, LoRA(q,v) on a
#     random-initialised Llama-2-7B-shaped model in bf16, every row 1024 tokens -> bench/results/train_gpu_seq1024.md.
#     Anchor: HF + PEFT LoRA(q,v) 14,306 tokens/s on an H200.
#  2) a QLoRA step (NF4, double quantisation, paged AdamW) -> bench/results/train_gpu_qlora.md, where bitsandbytes is.
#  3) the tests only a GPU can run (QLoRA, FSDP) and the DeepSpeed, compile and generate tests on this device
#     -> bench/results/train_gpu_tests.txt. Tests whose package is missing (bitsandbytes, deepspeed) skip, saying so.
#  4) with --all, also the course's shape (median ~460 tokens, 13% trained) -> bench/results/train_gpu_course.md.
#   bash bench/gpu.sh [--all] [WORKDIR]        (WORKDIR needs ~14 GB for the random model)
# Where $OUT is set, each result file is also copied there as soon as it is written.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=""; [ "${1:-}" = "--all" ] && { ALL=1; shift; }
WORK=${1:-/tmp/tooltune-gpu-bench}
MODEL=$WORK/llama2-7b-shaped
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
keep() { [ -n "${OUT:-}" ] && cp "$@" "$OUT/" || true; }
python -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
python -c "import deepspeed; print('deepspeed', deepspeed.__version__)" 2>/dev/null || echo "deepspeed: not installed"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh needs a CUDA GPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ ! -f "$MODEL/config.json" ]; then
  python - "$MODEL" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
# Llama-2-7B's shapes, random weights (no hub): 32 layers, hidden 4096, MLP 11008, 32 heads, vocab 32000.
config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, pad_token_id=0)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(sys.argv[1])
print("saved", sys.argv[1])
PY
fi
# Each run: 12 steps of 4 rows, the first 2 untimed (kernel selection; compilation on the compiled side).
COMMON="--model $MODEL --bf16 --batch 4 --steps 12 --skip 2 --repeats 2 --warmup 1"
# 1) the anchor's setting: every row 1024 tokens, all trained spans (tooltune's head trick has little to skip here).
timeout 300 python bench/train_throughput.py $COMMON --compile --median 1024 --fixed-length --trained 1.0 \
  --out bench/results/train_gpu_seq1024.md || echo "the anchor benchmark failed or ran out of time: see above"
keep bench/results/train_gpu_seq1024.md
# 2) a QLoRA step (tooltune only; needs bitsandbytes, else says it skipped).
if python -c "import bitsandbytes" 2>/dev/null; then
  timeout 120 python bench/train_throughput.py $COMMON --median 1024 --fixed-length --trained 1.0 --method qlora \
    --out bench/results/train_gpu_qlora.md || echo "QLoRA step failed: see the log above" | tee bench/results/train_gpu_qlora.md
  keep bench/results/train_gpu_qlora.md
else
  echo "QLoRA step skipped: bitsandbytes is not installed (pip install bitsandbytes)"
fi
# 3) what only CUDA can check, and DeepSpeed / compile / generate on this device.
timeout 220 python -m pytest -q -p no:cacheprovider -rs tests/test_deepspeed.py tests/test_train_compile.py \
  tests/test_gpu.py tests/test_peft_generate.py 2>&1 | tee bench/results/train_gpu_tests.txt || true
keep bench/results/train_gpu_tests.txt
if [ -n "$ALL" ]; then
  # 4) the course's shape: median ~460 tokens, 13% trained.
  python bench/train_throughput.py $COMMON --compile --median 460 --trained 0.13 --out bench/results/train_gpu_course.md
  keep bench/results/train_gpu_course.md
fi
echo; echo "== summary (anchor: HF + PEFT LoRA(q,v) 14,306 tokens/s on an H200, seq 1024) =="
for f in bench/results/train_gpu_seq1024.md bench/results/train_gpu_qlora.md ${ALL:+bench/results/train_gpu_course.md}; do
  echo "-- $f"; grep -E '^\| (HF|tooltune)|Speed-up|skipped' "$f" || true
done
tail -3 bench/results/train_gpu_tests.txt
