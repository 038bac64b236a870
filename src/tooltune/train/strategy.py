"""What each distributed type changes in the training loop, one table entry per type that differs from plain DDP.

The loop asks `strategy(accelerator)` and never tests the distributed type itself: DeepSpeed steps its own engine
(backward, clipping and the optimizer step happen inside it at a window's last micro-batch) and partitions
parameters; FSDP shards parameters in place. Both gather a full state dict to save, and neither can keep the frozen
layers' cache (train.cache_frozen), which holds activations of parameters they shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from accelerate import DistributedType

from tooltune.errors import ToolTuneError
from tooltune.train import methods


def _backward(accelerator, loss, last: bool) -> None:
    accelerator.backward(loss)


def _deepspeed_backward(accelerator, loss, last: bool) -> None:
    # One engine step per window: the boundary is the window's last micro-batch, where the engine reduces, clips and
    # steps (accelerate's backward would step after every micro-batch).
    accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=last)


def _clip(accelerator, loss_module, trainable: list, max_norm: float) -> float | None:
    """Clip the gradients of the trainable parameters to `max_norm` (0: no clipping); their norm before clipping."""
    return float(accelerator.clip_grad_norm_(trainable, max_norm)) if max_norm > 0 else None


def _fsdp_clip(accelerator, loss_module, trainable: list, max_norm: float) -> float | None:
    # FSDP shards parameters in place (DTensors, re-registered at its lazy init on the first forward): accelerate
    # clips them only when handed the prepared module's own current parameter list.
    return _clip(accelerator, loss_module, list(loss_module.parameters()), max_norm)


def _deepspeed_grad_norm(accelerator, loss_module, trainable: list, max_norm: float) -> float | None:
    # The engine has clipped (at the run config's norm, see configure_deepspeed) and stepped at the last backward.
    norm = accelerator.deepspeed_engine_wrapped.get_global_grad_norm()
    return None if norm is None else float(norm)


def _own_state_dict(accelerator, loss_module, model) -> dict | None:
    return None  # the model's own, as save_pretrained reads it


def _fsdp_state_dict(accelerator, loss_module, model) -> dict | None:
    return accelerator.get_state_dict(model)


def _deepspeed_state_dict(accelerator, loss_module, model) -> dict | None:
    # Only the engine (the prepared TokenLoss) can gather ZeRO-3 partitions; its keys start with "model.".
    gathered = accelerator.get_state_dict(loss_module)
    return {k.removeprefix("model."): v for k, v in gathered.items()}


def _nothing_to_configure(accelerator, cfg) -> None:
    return None


def configure_deepspeed(accelerator, cfg) -> None:
    """Hand DeepSpeed what it needs from the run config before `prepare` (there is no dataloader to read it from).

    tooltune accumulates micro-batches itself, normalising by the trained tokens of the whole window, so the DeepSpeed
    config must not accumulate too; clipping is the run config's, applied by the engine at the window's end.
    """
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    accum = ds.get("gradient_accumulation_steps", 1)
    if accum not in (1, "auto"):
        raise ToolTuneError(f"the DeepSpeed config sets gradient_accumulation_steps: {accum}; tooltune accumulates "
                            f"itself: set it to 1 and use train.grad_accum={accum} instead")
    if methods.METHODS[cfg.method.name].allocates_ranks:
        raise ToolTuneError(f"method {cfg.method.name} reads its matrices' gradients after every step, which "
                            f"DeepSpeed ZeRO partitions away: run it with DDP (accelerate launch --multi_gpu)")
    ds["gradient_accumulation_steps"] = 1
    ds["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
    ds["gradient_clipping"] = cfg.train.max_grad_norm


@dataclass(frozen=True)
class Strategy:
    configure: Callable = _nothing_to_configure
    """(accelerator, cfg): before `accelerator.prepare`."""
    backward: Callable = _backward
    """(accelerator, loss, last): back-propagate one micro-batch; `last` ends the optimizer step's window."""
    grad_norm: Callable = _clip
    """(accelerator, loss_module, trainable, max_norm) -> the gradient norm (None: not clipped), after clipping."""
    state_dict: Callable = _own_state_dict
    """(accelerator, loss_module, model) -> the full state dict to save (None: the model's own); every process."""
    steps_itself: bool = False
    """The optimizer step happens inside backward (`optimizer.step()` is then a no-op)."""
    shards_parameters: bool = False
    """Parameters are sharded across processes (train.cache_frozen is refused)."""


STRATEGIES: dict[DistributedType, Strategy] = {
    DistributedType.DEEPSPEED: Strategy(configure=configure_deepspeed, backward=_deepspeed_backward,
                                        grad_norm=_deepspeed_grad_norm, state_dict=_deepspeed_state_dict,
                                        steps_itself=True, shards_parameters=True),
    DistributedType.FSDP: Strategy(grad_norm=_fsdp_clip, state_dict=_fsdp_state_dict, shards_parameters=True),
}
PLAIN = Strategy()
"""One process, DDP (MULTI_CPU, MULTI_GPU) and the rest: accelerate's own backward, clipping and saving."""


def strategy(accelerator) -> Strategy:
    return STRATEGIES.get(accelerator.distributed_type, PLAIN)
