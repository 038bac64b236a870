#!/usr/bin/env bash
# Training throughput on a CUDA GPU (not runnable on the CPU-only dev machine): tooltune vs HF Trainer + PEFT on a
# random-initialised Llama-2-7B-shaped model in bf16, plus a QLoRA step. Prints a short table; results also go to
# bench/results/train_gpu_*.md. Anchor: HF + PEFT LoRA(q,v) 14,306 tokens/s on an H200 (seq 1024).
#   bash bench/gpu.sh [WORKDIR]        (WORKDIR needs ~14 GB for the random model)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/tooltune-gpu-bench}
MODEL=$WORK/llama2-7b-shaped
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
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
COMMON="--model $MODEL --bf16 --batch 4 --steps 10 --repeats 2 --warmup 1"
# 1) all tokens trained, every row 1024 tokens: the anchor's setting (tooltune's head trick cannot help here).
python bench/train_throughput.py $COMMON --median 1024 --fixed-length --trained 1.0 --out bench/results/train_gpu_seq1024.md
# 2) the course's shape: median ~460 tokens, 13% trained.
python bench/train_throughput.py $COMMON --median 460 --trained 0.13 --out bench/results/train_gpu_course.md
# 3) a QLoRA step (tooltune only): needs bitsandbytes.
if python -c "import bitsandbytes" 2>/dev/null; then
  python bench/train_throughput.py $COMMON --median 1024 --fixed-length --trained 1.0 --method qlora \
    --out bench/results/train_gpu_qlora.md || echo "QLoRA step failed: see the log above" | tee bench/results/train_gpu_qlora.md
else
  echo "QLoRA skipped: bitsandbytes is not installed (pip install bitsandbytes)" | tee bench/results/train_gpu_qlora.md
fi
# 4) what only CUDA can check: QLoRA trains and reloads, the FSDP config runs `tooltune train`, and each PEFT
#    method's generate() agrees with a plain forward pass on this device.
python -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_peft_generate.py 2>&1 | tee bench/results/train_gpu_tests.txt || true
echo; echo "== summary (anchor: HF + PEFT LoRA(q,v) 14,306 tokens/s on an H200, seq 1024) =="
for f in bench/results/train_gpu_seq1024.md bench/results/train_gpu_course.md bench/results/train_gpu_qlora.md; do
  echo "-- $f"; grep -E '^\| (HF|tooltune)|Speed-up|skipped' "$f" || true
done
