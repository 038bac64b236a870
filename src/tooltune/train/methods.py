"""Every training method in ONE table: name -> how to build its PEFT config, and what it cannot do.

The loop never branches on a method's name; it asks the table entry (`Method`) instead. Adding a method is one entry.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tooltune.errors import ToolTuneError
from tooltune.models import trainable_token_config
from tooltune.train.frozen import parse_layers, top_layer_targets


@dataclass(frozen=True)
class Method:
    summary: str
    """One line for `--help` and docs."""
    peft_config: Callable[[Any, int], Any] | None
    """(MethodConfig, total optimizer steps) -> a peft config; None: train the full model."""
    virtual_tokens: bool = False
    """Prepends virtual tokens or past key/values: the loss takes the plain full-logits path (see
    `tooltune.train.loss.TokenLoss`)."""
    no_checkpointing: str = ""
    """Why gradient checkpointing cannot be used with it (empty: it can)."""
    quantized: bool = False
    """Loads the base in 4 bits (bitsandbytes: on a CUDA GPU, or on the CPU from `QLORA_CPU_BNB` on) and uses a
    paged optimizer; merging is refused."""
    allocates_ranks: bool = False
    """AdaLoRA: call update_and_allocate after every optimizer step and add the orthogonality regulariser."""


def _targets(cfg) -> Any:
    return "all-linear" if tuple(cfg.target_modules) == ("all-linear",) else list(cfg.target_modules)


def _prompt(cfg, total_steps):
    from peft import PromptTuningConfig, PromptTuningInit
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.RANDOM)


def _ptuning(cfg, total_steps):
    from peft import PromptEncoderConfig
    return PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                               encoder_reparameterization_type=cfg.encoder, encoder_hidden_size=cfg.encoder_hidden_size)


def _prefix(cfg, total_steps):
    from peft import PrefixTuningConfig
    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                              prefix_projection=cfg.prefix_projection, encoder_hidden_size=cfg.encoder_hidden_size)


def _lora(use_dora: bool) -> Callable:
    def build(cfg, total_steps):
        from peft import LoraConfig
        return LoraConfig(task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=_targets(cfg), use_dora=use_dora)
    return build


def _adalora(cfg, total_steps):
    from peft import AdaLoraConfig
    if total_steps - cfg.tinit - cfg.tfinal <= 0:
        raise ToolTuneError(f"adalora: the run has {total_steps} optimizer steps, but method.tinit ({cfg.tinit}) + "
                            f"method.tfinal ({cfg.tfinal}) leave no steps to reallocate ranks in")
    # AdaLoRA needs total_step: its budget schedule runs from init_r to target_r between tinit and total_step - tfinal.
    return AdaLoraConfig(task_type="CAUSAL_LM", init_r=cfg.init_r, target_r=cfg.target_r, tinit=cfg.tinit,
                         tfinal=cfg.tfinal, deltaT=cfg.delta_t, total_step=total_steps, lora_alpha=cfg.alpha,
                         lora_dropout=cfg.dropout, target_modules=_targets(cfg), orth_reg_weight=cfg.orth_reg_weight)


_PAST_KV = "prefix tuning feeds past_key_values into every layer, which gradient checkpointing cannot recompute"

METHODS: dict[str, Method] = {
    "prompt": Method("Prompt Tuning: trainable virtual-token embeddings before the input", _prompt,
                     virtual_tokens=True),
    "ptuning": Method("P-Tuning: virtual tokens produced by an MLP or LSTM encoder", _ptuning, virtual_tokens=True),
    "prefix": Method("Prefix-Tuning / P-Tuning v2: trainable key/value prefixes in every layer", _prefix,
                     virtual_tokens=True, no_checkpointing=_PAST_KV),
    "lora": Method("LoRA: low-rank updates of the target linear layers", _lora(False)),
    "dora": Method("DoRA: LoRA with a learned magnitude per output feature", _lora(True)),
    "qlora": Method("QLoRA: LoRA on a 4-bit NF4 (double-quantised) base with paged AdamW", _lora(False),
                    quantized=True),
    "adalora": Method("AdaLoRA: SVD-form LoRA whose ranks are reallocated by importance during training", _adalora,
                      allocates_ranks=True),
    "full": Method("Full fine-tuning: every parameter trains", None),
}


QLORA_CPU_BNB = (0, 50)
"""The bitsandbytes release from which QLoRA runs here without CUDA: its 4-bit layers and paged AdamW have CPU
implementations (measured with 0.50.2: tests/test_train_methods.py trains, saves and reloads a 4-bit tiny model)."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_supported(method_name: str, gradient_checkpointing: bool) -> None:
    """Refuse, with the reason, what the method and this machine cannot do."""
    method = METHODS[method_name]
    if gradient_checkpointing and method.no_checkpointing:
        raise ToolTuneError(f"method {method_name} cannot use model.gradient_checkpointing: {method.no_checkpointing}; "
                            f"set model.gradient_checkpointing=false")
    if method.quantized:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ToolTuneError(f"method {method_name} needs bitsandbytes (4-bit NF4 weights, paged AdamW), which is "
                                f"not installed: pip install 'tooltune[qlora]', or use method.name=lora")
        installed = importlib.metadata.version("bitsandbytes")
        if not torch.cuda.is_available() and _version(installed) < QLORA_CPU_BNB:
            need = ".".join(map(str, QLORA_CPU_BNB))
            raise ToolTuneError(f"method {method_name} without a CUDA GPU needs bitsandbytes>={need}, whose 4-bit "
                                f"layers run on the CPU; {installed} is installed: pip install 'bitsandbytes>={need}', "
                                f"or use method.name=lora")


def load_kwargs(method_name: str, dtype: torch.dtype) -> dict:
    """Extra from_pretrained arguments: the 4-bit quantisation for QLoRA."""
    if not METHODS[method_name].quantized:
        return {}
    from accelerate import PartialState
    from transformers import BitsAndBytesConfig
    compute = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    # 4-bit weights are quantised as they load onto their device; each process loads its own copy onto its own GPU.
    device = PartialState().local_process_index if torch.cuda.is_available() else "cpu"
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute),
            "device_map": {"": device}}


def wrap(model, cfg, total_steps: int, gradient_checkpointing: bool = False, new_token_ids: list[int] = ()):
    """The model ready to train with `cfg` (a MethodConfig): a PeftModel, or the model itself for `full`.

    `new_token_ids`: special tokens the chat format added to the tokenizer. LoRA-family methods train their embedding
    rows (peft's trainable_token_indices); prompt methods cannot, so those rows keep their mean-initialised values.
    """
    method = METHODS[cfg.name]
    check_supported(cfg.name, gradient_checkpointing)
    if method.quantized:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        keep_trainable_4bit_layout(model)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method.peft_config is None:
        model.requires_grad_(True)
        return model
    from peft import get_peft_model
    peft_config = method.peft_config(cfg, total_steps)
    if parse_layers(cfg.layers) is not None:  # adapters on the top K layers: their modules named one by one
        peft_config.target_modules = top_layer_targets(model, cfg.layers, tuple(cfg.target_modules))
    if new_token_ids and hasattr(peft_config, "trainable_token_indices"):
        peft_config.trainable_token_indices = trainable_token_config(new_token_ids, model)["trainable_token_indices"]
    return get_peft_model(model, peft_config)


def keep_trainable_4bit_layout(model) -> int:
    """Stop bitsandbytes from repacking CPU 4-bit weights for inference; returns the layers told so.

    On a CPU with AVX512-BF16, a `Linear4bit` repacks its weight into an inference layout at its first forward in
    eval mode without gradients (the loop's loss-path probe, every dev evaluation). From then on its matmul has no
    backward, so the gradients of every adapter below it are silently zero and training stops learning
    (bitsandbytes 0.50.2; tests/test_train_methods.py checks that every step still has a gradient)."""
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def make_optimizer(method_name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if METHODS[method_name].quantized:
        import bitsandbytes as bnb
        return bnb.optim.PagedAdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def orthogonal_regulariser(model, adapter: str = "default") -> torch.Tensor | float:
    """AdaLoRA's ||PP^T - I|| + ||Q^TQ - I|| mean over adapted matrices (peft adds it only when `labels` are passed)."""
    total, count = 0.0, 0
    for name, p in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and adapter in name and p.requires_grad:
            cov = p @ p.T if "lora_A" in name else p.T @ p
            total = total + torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype))
            count += 1
    return total / count if count else 0.0


def adalora_ranks(model) -> dict[str, int]:
    """Current rank of every AdaLoRA module: the non-zero entries of its singular-value vector lora_E."""
    return {name.removesuffix(".lora_E.default"): int((p != 0).sum()) for name, p in model.named_parameters()
            if name.endswith("lora_E.default")}


def after_optimizer_step(method_name: str, model, step: int) -> dict:
    """Per-step method work: AdaLoRA reallocates its rank budget (must run before zero_grad). Returns values to log."""
    if not METHODS[method_name].allocates_ranks:
        return {}
    tuner = model.base_model
    tuner.update_and_allocate(step)
    ranks = adalora_ranks(model)
    budget = None
    allocator = getattr(tuner, "rankallocator", None)
    if allocator is not None:
        budget = allocator.budget_schedule(step)[0]
    return {"adalora_total_rank": sum(ranks.values()), "adalora_budget": budget}


def extra_loss(cfg, model) -> Callable[[], torch.Tensor | float] | None:
    """The term a method adds to the loss of each optimizer step's last micro-batch, or None: AdaLoRA's
    orthogonality regulariser, weighted by `method.orth_reg_weight` (`cfg` is the MethodConfig)."""
    if not METHODS[cfg.name].allocates_ranks or cfg.orth_reg_weight <= 0:
        return None
    return lambda: cfg.orth_reg_weight * orthogonal_regulariser(model)
