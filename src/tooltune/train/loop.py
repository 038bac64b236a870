"""The one training loop (accelerate): every method, fine-tuning and pre-training alike.

Per optimizer step: take `grad_accum` micro-batches per process, count their trained tokens over all processes, and
back-propagate each micro-batch's SUM of token losses divided by that count (times the process count, because DDP
averages gradients). The step's gradient is then exactly the gradient of (sum of token losses / trained tokens) over
the whole accumulated batch, never a mean of per-batch means. Then clip, step, schedule, and let the method act
(AdaLoRA reallocates ranks).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import parse_flag_from_env, set_seed

from tooltune import rundir
from tooltune.errors import ToolTuneError
from tooltune.jsonio import atomic_write_text, staged_directory
from tooltune.rundir import RunInfo
from tooltune.train import checkpoint, methods
from tooltune.train.config import RunConfig, config_to_dict
from tooltune.train.data import IGNORE, Example, batch_order, collate
from tooltune.train.frozen import FrozenBottom, cut_index, decoder_layers, parse_layers
from tooltune.train.loss import TokenLoss, fast_path_agrees, transformers_model


@dataclass
class Plan:
    """How many optimizer steps the run has, from the data size and the batch settings."""
    rounds_per_epoch: int
    """Micro-batch rounds per epoch (one micro-batch on every process)."""
    steps_per_epoch: int
    total_steps: int
    dropped_batches: int = 0
    """Batches per epoch left out because they did not fill a round of all processes (counted, reported)."""


def plan(n_examples: int, cfg: RunConfig, num_processes: int) -> Plan:
    t = cfg.train
    n_batches = math.ceil(n_examples / t.batch_size)
    rounds = n_batches // num_processes
    if rounds == 0:
        raise ToolTuneError(f"{n_examples} training examples do not fill one batch of {t.batch_size} on each of "
                            f"{num_processes} processes")
    per_epoch = math.ceil(rounds / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(t.epochs * per_epoch))
    return Plan(rounds, per_epoch, total, n_batches - rounds * num_processes)


def lr_lambda(cfg, total_steps: int):
    """Linear warm-up, then cosine or linear decay to 0 at total_steps, or constant."""
    warm = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return factor


@dataclass
class Progress:
    """Where the run is; saved in checkpoints so that a resumed run continues with the same data."""
    step: int = 0
    epoch: int = 0
    window: int = 0
    """Optimizer steps already taken in this epoch."""
    best_dev: float | None = None
    bad_evals: int = 0
    history: list = field(default_factory=list)


def _windows(examples, cfg, plan_: Plan, epoch: int, rank: int, nproc: int) -> list[list[list[Example]]]:
    """This process's micro-batches of `epoch`, grouped in optimizer-step windows."""
    batches = batch_order([len(e.input_ids) for e in examples], cfg.train.batch_size, cfg.train.seed, epoch,
                          cfg.data.group_by_length)
    mine = batches[rank:plan_.rounds_per_epoch * nproc:nproc]
    g = cfg.train.grad_accum
    return [[[examples[i] for i in b] for b in mine[s:s + g]] for s in range(0, len(mine), g)]


def _sum_over_processes(accelerator, value: float | int) -> float:
    t = torch.tensor(float(value), device=accelerator.device, dtype=torch.float64)
    return float(accelerator.reduce(t, reduction="sum")) if accelerator.num_processes > 1 else float(t)


def _name_rows(bottom: FrozenBottom | None, examples: list[Example]) -> None:
    """Tell the frozen bottom (if any) which examples the next forward holds, so it can cache their rows."""
    if bottom is not None:
        bottom.set_batch([id(e) for e in examples], [len(e.input_ids) for e in examples])


def _train_step(accelerator, loss_module, window, pad_id: int, extra_loss, bottom: FrozenBottom | None = None
                ) -> tuple[float, float, float]:
    """Forward/backward over one window; returns (loss of the step, trained tokens, all tokens), all processes."""
    batches = [collate(mb, pad_id) for mb in window]
    local_trained = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    trained = _sum_over_processes(accelerator, local_trained)
    tokens = _sum_over_processes(accelerator, sum(len(e.input_ids) for mb in window for e in mb))
    scale = accelerator.num_processes / trained
    loss_sum = 0.0
    for i, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        _name_rows(bottom, window[i])
        last = i == len(batches) - 1
        ctx = accelerator.no_sync(loss_module) if not last else _nullcontext()
        with ctx:
            s, _ = loss_module(**batch)
            loss = s * scale
            if last and extra_loss is not None:
                loss = loss + extra_loss()
            if accelerator.distributed_type == DistributedType.DEEPSPEED:
                # One engine step per window: the boundary is the window's last micro-batch, where the engine
                # reduces, clips and steps (accelerate's backward would step after every micro-batch).
                accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=last)
            else:
                accelerator.backward(loss)
        loss_sum += float(s.detach())
    return _sum_over_processes(accelerator, loss_sum) / trained, trained, tokens


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@torch.no_grad()
def evaluate(accelerator, loss_module, examples: list[Example], batch_size: int, pad_id: int,
             bottom: FrozenBottom | None = None) -> float:
    """Dev loss: sum of token losses / trained tokens over the whole dev set (split across processes)."""
    module = accelerator.unwrap_model(loss_module)  # no DDP forward: processes may run different batch counts
    was_training = module.training
    module.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for batch_ids in batches[accelerator.process_index::accelerator.num_processes]:
        batch = {k: v.to(accelerator.device) for k, v in collate([examples[i] for i in batch_ids], pad_id).items()}
        _name_rows(bottom, [examples[i] for i in batch_ids])
        with accelerator.autocast():
            s, n = module(**batch)
        total, count = total + float(s), count + int(n)
    module.train(was_training)
    return _sum_over_processes(accelerator, total) / max(1.0, _sum_over_processes(accelerator, count))


@dataclass
class TrainResult:
    info: RunInfo
    """What run.json holds: steps, losses, sizes, what was left out."""
    model: object
    """The trained model as wrapped by its method (a PeftModel, or the model itself for `full`)."""

    @property
    def summary(self) -> dict:
        """`info` as run.json writes it (the fields that are set)."""
        return self.info.to_dict()


def run_training(cfg: RunConfig, model, tokenizer, train: list[Example], dev: list[Example], *,
                 resume: bool = False, meta: RunInfo | None = None, stop_after: int | None = None,
                 on_start=None, new_token_ids: list[int] = ()) -> TrainResult:
    """Train `model` (a base transformers model; the method wraps it) and write the run directory.

    `stop_after` ends the loop after that many optimizer steps as if interrupted (no final save): for tests of resume.
    `on_start(model)` is called with the wrapped model before the first step (tests snapshot the initial weights).
    """
    # "no" defers to the launcher (accelerate config / ACCELERATE_MIXED_PRECISION), which defaults to no.
    # cpu=True without CUDA: processes started by `accelerate launch --multi_gpu` / torchrun then join over gloo
    # (MULTI_CPU); accelerate only picks that mode when told it runs on the CPU.
    # DeepSpeed runs on the CPU too, through its own CPU accelerator, so a DeepSpeed launch is never forced to cpu=True.
    accelerator = Accelerator(mixed_precision=None if cfg.train.mixed_precision == "no" else cfg.train.mixed_precision,
                              cpu=not torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"))
    set_seed(cfg.train.seed)
    run_dir = Path(cfg.train.out)
    _check_run_dir(cfg, run_dir, resume)
    plan_ = plan(len(train), cfg, accelerator.num_processes)
    model = methods.wrap(model, cfg.method, plan_.total_steps, cfg.model.gradient_checkpointing, new_token_ids)
    model.train()
    bottom = _frozen_bottom(accelerator, cfg, model, new_token_ids)
    compiled_blocks = compile_blocks(model) if cfg.train.compile else 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = methods.make_optimizer(cfg.method.name, trainable, cfg.train.lr, cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train, plan_.total_steps))
    if on_start is not None:
        on_start(model)
    vocab = output_vocab(train) if cfg.train.output_vocab == "domain" else None
    loss_module = TokenLoss(model, plain=methods.METHODS[cfg.method.name].virtual_tokens, vocab=vocab)
    # The scheduler is stepped here once per optimizer step, so it is not handed to accelerate (which would step it
    # once per process).
    on_deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if on_deepspeed:
        _configure_deepspeed(accelerator, cfg)
    loss_module, optimizer = accelerator.prepare(loss_module, optimizer)
    if bottom is not None:
        bottom.set_batch(None)  # the probe is not cached
    loss_path = _choose_loss_path(accelerator, loss_module, train[:cfg.train.batch_size], tokenizer)
    # FSDP shards parameters in place (DTensors, re-registered at its lazy init on the first forward): accelerate
    # clips them only when handed the prepared module's own current parameter list.
    sharded = accelerator.distributed_type == DistributedType.FSDP
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    extra_loss = None
    if methods.METHODS[cfg.method.name].allocates_ranks and cfg.method.orth_reg_weight > 0:
        extra_loss = lambda: cfg.method.orth_reg_weight * methods.orthogonal_regulariser(model)  # noqa: E731

    prog = Progress()
    if resume:
        found = checkpoint.latest(run_dir)
        if found is None:
            raise ToolTuneError(f"--resume: no checkpoint under {run_dir / rundir.CHECKPOINTS}")
        prog = Progress(**checkpoint.load(found, accelerator, model, optimizer, scheduler))
        accelerator.print(f"resuming from {found} (step {prog.step})")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, cfg)
        _write_log(run_dir, prog.history)
    info = dataclasses.replace(
        meta or RunInfo(), method=cfg.method.name, base_model=cfg.model.path, train_examples=len(train),
        dev_examples=len(dev), total_steps=plan_.total_steps, processes=accelerator.num_processes,
        distributed_type=str(accelerator.distributed_type.value), device=str(accelerator.device),
        dropped_batches_per_epoch=plan_.dropped_batches, trainable_parameters=sum(p.numel() for p in trainable),
        loss_path=loss_path, compiled_blocks=compiled_blocks, adapted_layers=cfg.method.layers,
        frozen_layers=bottom.cut if bottom else 0, output_vocab=len(vocab) if vocab is not None else "all")
    bar = _progress_bar(accelerator, plan_.total_steps, prog.step)
    started, seen_tokens, seen_trained = time.perf_counter(), 0.0, 0.0
    stopped_early = out_of_time = False

    def log(entry: dict) -> None:
        prog.history.append(entry)
        if accelerator.is_main_process:
            with (run_dir / rundir.LOG).open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    while prog.step < plan_.total_steps and not stopped_early and not out_of_time:
        windows = _windows(train, cfg, plan_, prog.epoch, accelerator.process_index, accelerator.num_processes)
        for window in windows[prog.window:]:
            loss, trained, tokens = _train_step(accelerator, loss_module, window, pad_id, extra_loss, bottom)
            grad_norm = None
            if on_deepspeed:  # the engine has clipped and stepped at the window's last backward
                grad_norm = accelerator.deepspeed_engine_wrapped.get_global_grad_norm()
                grad_norm = None if grad_norm is None else float(grad_norm)
            elif cfg.train.max_grad_norm > 0:
                grad_norm = float(accelerator.clip_grad_norm_(
                    list(loss_module.parameters()) if sharded else trainable, cfg.train.max_grad_norm))
            optimizer.step()  # a no-op under DeepSpeed
            scheduler.step()
            prog.step, prog.window = prog.step + 1, prog.window + 1
            method_log = methods.after_optimizer_step(cfg.method.name, model, prog.step)
            optimizer.zero_grad(set_to_none=True)
            seen_tokens, seen_trained = seen_tokens + tokens, seen_trained + trained
            elapsed = time.perf_counter() - started
            if prog.step % cfg.train.log_every == 0 or prog.step == plan_.total_steps:
                log({"step": prog.step, "epoch": prog.epoch, "loss": loss, "lr": scheduler.get_last_lr()[0],
                     "grad_norm": grad_norm, "elapsed_s": elapsed, "tokens": seen_tokens, "trained_tokens": seen_trained,
                     "tokens_per_s": seen_tokens / elapsed,
                     "trained_tokens_per_s": seen_trained / elapsed, **method_log})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{seen_tokens / elapsed:.0f}")
            out_of_time = _out_of_time(accelerator, elapsed, cfg.train.max_minutes)
            last = prog.step == plan_.total_steps or out_of_time
            if dev and ((cfg.train.eval_every and prog.step % cfg.train.eval_every == 0) or last):
                stopped_early = _evaluate_and_keep_best(accelerator, loss_module, model, tokenizer, dev, cfg,
                                                        run_dir, prog, log, bottom)
            # A run cut by train.max_minutes keeps a checkpoint of where it stopped: its last weights stay on disk
            # (the saved adapter is the best dev loss's) and --resume with a larger cap continues it.
            if cfg.train.save_every and (prog.step % cfg.train.save_every == 0 and not last or out_of_time):
                checkpoint.save(rundir.checkpoint_dir(run_dir, prog.step), accelerator,
                                accelerator.unwrap_model(loss_module).model, optimizer, scheduler, vars(prog))
            if last or stopped_early or (stop_after is not None and prog.step >= stop_after):
                break
        if stop_after is not None and prog.step >= stop_after:
            bar.close()
            return TrainResult(dataclasses.replace(info, interrupted_at=prog.step), model)
        if prog.step < plan_.total_steps and not stopped_early and not out_of_time:
            prog.epoch, prog.window = prog.epoch + 1, 0
    bar.close()
    if out_of_time:
        info = dataclasses.replace(info, stopped_for_time={"step": prog.step, "epoch": prog.epoch,
                                                           "minutes": cfg.train.max_minutes})
        accelerator.print(f"tooltune train: train.max_minutes={cfg.train.max_minutes:g} reached at step {prog.step} "
                          f"of {plan_.total_steps}; ending the run there")
    if bottom is not None and bottom.cache:
        info = dataclasses.replace(info, frozen_cache_bytes=bottom.nbytes, frozen_cache_hits=bottom.hits,
                                   frozen_cache_misses=bottom.misses)
        accelerator.print(f"tooltune train: frozen-layer cache {bottom.nbytes / 2**20:.0f} MiB, {bottom.hits} batches "
                          f"served from it, {bottom.misses} computed")
    info = _finish(accelerator, loss_module, model, tokenizer, dev, run_dir, prog, stopped_early, info)
    if accelerator.is_main_process:
        rundir.write_info(run_dir, info)
    accelerator.wait_for_everyone()
    return TrainResult(info, model)


def _out_of_time(accelerator, elapsed: float, max_minutes: float) -> bool:
    """train.max_minutes reached (on any process: all of them stop at the same step)."""
    if not max_minutes:
        return False
    late = elapsed >= max_minutes * 60
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(late), device=accelerator.device)
        late = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return late


def output_vocab(train: list[Example]) -> list[int]:
    """train.output_vocab=domain: every token id of the training examples (inputs and targets)."""
    ids: set[int] = set()
    for e in train:
        ids.update(e.input_ids)
        ids.update(t for t in e.labels if t != IGNORE)
    return sorted(ids)


def _frozen_bottom(accelerator, cfg: RunConfig, model, new_token_ids) -> FrozenBottom | None:
    """The layers below the adapters (method.layers=top:K), run without autograd and cached if asked; None for all."""
    cut = cut_index(model, cfg.method.layers)
    if not cut:
        if parse_layers(cfg.method.layers) is not None:
            accelerator.print(f"tooltune train: method.layers={cfg.method.layers} covers all "
                              f"{len(decoder_layers(model))} layers: nothing is frozen or cached")
        return None
    if cfg.train.cache_frozen:
        if new_token_ids:
            raise ToolTuneError(f"train.cache_frozen: {len(new_token_ids)} special-token rows train with the adapter "
                                f"and feed the frozen layers through the input embeddings, so their output changes "
                                f"as they train; set train.cache_frozen=false (method.layers=top:K still applies)")
        if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ToolTuneError(f"train.cache_frozen is not supported under {accelerator.distributed_type.value} "
                                f"(sharded parameters); use DDP or one process")
    accelerator.print(f"tooltune train: adapters on layers {cut}-{len(decoder_layers(model)) - 1}; layers "
                      f"0-{cut - 1} frozen{' and cached' if cfg.train.cache_frozen else ''}")
    return FrozenBottom(model, cut, cfg.train.cache_frozen)


def compile_blocks(model) -> int:
    """Compile every decoder block of `model` in place; returns how many.

    The blocks are the classes a transformers model names in `_no_split_modules` (LlamaDecoderLayer, ...). Their
    forward is one code object, so one compiled graph serves all of them, and `Module.compile` compiles in place, so
    parameter names (and so checkpoints and the saved adapter) stay as they are. The rest of the model runs eagerly.
    """
    blocks = decoder_layers(model, option="train.compile", fallback="train.compile=false")
    for block in blocks:
        block.compile()
    return len(blocks)


def _configure_deepspeed(accelerator, cfg: RunConfig) -> None:
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


def _choose_loss_path(accelerator, loss_module, examples, tokenizer) -> str:
    """Keep the trained-positions loss only where it equals the model's own loss on a first batch."""
    module = accelerator.unwrap_model(loss_module)
    if module.plain:
        return "full logits (virtual-token method)"
    batch = {k: v.to(accelerator.device) for k, v in collate(examples, tokenizer.pad_token_id or 0).items()}
    with accelerator.autocast():
        ok, fast, plain = fast_path_agrees(module, batch)
    if ok:
        return "trained positions only"
    module.plain = True
    why = f"full logits (trained-positions loss {fast:.5f} != model loss {plain:.5f} on batch 1)"
    accelerator.print(f"tooltune train: {type(transformers_model(module.model)).__name__}: {why}; using the plain path")
    return why


# Settings a resumed run may change: they do not alter what the steps already taken computed.
RESUMABLE_CHANGES = {"train.cache_frozen", "train.max_steps", "train.max_minutes", "train.epochs", "train.eval_every", "train.early_stopping", "train.save_every",
                     "train.log_every"}


def _check_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """Refuse to mix runs: a fresh run into a directory with checkpoints, or a resume with another config."""
    if not resume:
        if checkpoint.latest(run_dir) is not None:
            raise ToolTuneError(f"{run_dir} holds checkpoints of an earlier run: pass --resume to continue it, or "
                                f"choose another train.out")
        return
    if not rundir.has_config(run_dir):
        return
    old = _flat(config_to_dict(rundir.read_config(run_dir)))
    new = _flat(config_to_dict(cfg))
    changed = sorted(k for k in new.keys() | old.keys() if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ToolTuneError(f"--resume with a config that differs from {run_dir / rundir.CONFIG} in "
                            f"{', '.join(changed)}: the resumed run would not continue the same training")


def _flat(tree: dict) -> dict:
    """{"train.lr": ..., ...} from the config's sections."""
    return {f"{s}.{k}": v for s, sub in tree.items() for k, v in sub.items()}


def _evaluate_and_keep_best(accelerator, loss_module, model, tokenizer, dev, cfg, run_dir, prog, log,
                            bottom=None) -> bool:
    """Evaluate; save the adapter when the dev loss improved. Returns True when early stopping says stop."""
    dev_loss = evaluate(accelerator, loss_module, dev, cfg.train.batch_size, tokenizer.pad_token_id or 0, bottom)
    log({"step": prog.step, "dev_loss": dev_loss, "dev_perplexity": math.exp(min(dev_loss, 50))})
    if prog.best_dev is None or dev_loss < prog.best_dev:
        prog.best_dev, prog.bad_evals = dev_loss, 0
        _save_model(accelerator, loss_module, model, tokenizer, run_dir)
        return False
    prog.bad_evals += 1
    return bool(cfg.train.early_stopping) and prog.bad_evals >= cfg.train.early_stopping


def _save_model(accelerator, loss_module, model, tokenizer, run_dir: Path) -> None:
    """The adapter (or full model) and tokenizer into the run dir: PeftModel.from_pretrained(base, run_dir) loads it."""
    accelerator.wait_for_everyone()
    # Sharded (FSDP/DeepSpeed ZeRO-3) weights are gathered into a full state dict first, on every process.
    state_dict = None
    if accelerator.distributed_type == DistributedType.FSDP:
        state_dict = accelerator.get_state_dict(model)
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        # Only the engine (the prepared TokenLoss) can gather ZeRO-3 partitions; its keys start with "model.".
        gathered = accelerator.get_state_dict(loss_module)
        state_dict = {k.removeprefix("model."): v for k, v in gathered.items()}
    if accelerator.is_main_process:  # staged, then moved in: a kill never leaves half an adapter
        with staged_directory(run_dir) as staging:
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
    accelerator.wait_for_everyone()


def _finish(accelerator, loss_module, model, tokenizer, dev, run_dir: Path, prog: Progress,
            stopped_early: bool, info: RunInfo) -> RunInfo:
    if not dev:  # with a dev set the best-dev model is already saved
        _save_model(accelerator, loss_module, model, tokenizer, run_dir)
    train_losses = [e["loss"] for e in prog.history if "loss" in e]
    if accelerator.is_main_process:
        plot_losses(prog.history, run_dir / rundir.LOSS_PLOT)
    return dataclasses.replace(
        info, steps=prog.step, final_train_loss=train_losses[-1] if train_losses else None,
        best_dev_loss=prog.best_dev, stopped_early=stopped_early, saved="best dev loss" if dev else "last step",
        best_dev_perplexity=math.exp(min(prog.best_dev, 50)) if prog.best_dev is not None else None)


def _write_log(run_dir: Path, history: list) -> None:
    atomic_write_text(run_dir / rundir.LOG, "".join(json.dumps(e) + "\n" for e in history))


def _progress_bar(accelerator, total: int, initial: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not accelerator.is_local_main_process, unit="step",
                dynamic_ncols=True)


def plot_losses(history: list[dict], path: Path) -> None:
    """Train and dev loss against the optimizer step, as a PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(e["step"], e["loss"]) for e in history if "loss" in e]
    dev = [(e["step"], e["dev_loss"]) for e in history if "dev_loss" in e]
    for points, label, style in ((train, "train", "-"), (dev, "dev", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per trained token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
