"""The one training loop (accelerate): every method, fine-tuning and pre-training alike.

Per optimizer step: take `grad_accum` micro-batches per process, count their trained tokens over all processes, and
back-propagate each micro-batch's SUM of token losses divided by that count (times the process count, because DDP
averages gradients). The step's gradient is then exactly the gradient of (sum of token losses / trained tokens) over
the whole accumulated batch, never a mean of per-batch means. Then clip, step, schedule, and let the method act
(AdaLoRA reallocates ranks).

What DeepSpeed and FSDP change is in their strategy (`tooltune.train.strategy`); what each step logs goes to the run
directory's log.jsonl and, with `train.report_to`, to a tracker (`tooltune.train.tracking`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import parse_flag_from_env, set_seed

from tooltune import rundir
from tooltune.errors import ToolTuneError
from tooltune.jsonio import atomic_write_text, staged_directory
from tooltune.rundir import RunInfo
from tooltune.train import checkpoint, methods, tracking
from tooltune.train.config import RunConfig, config_to_dict
from tooltune.formats import IGNORE_INDEX, Example
from tooltune.formats.packing import collate
from tooltune.train.data import batch_order
from tooltune.train.frozen import FrozenBottom, cut_index, decoder_layers, parse_layers
from tooltune.train.loss import TokenLoss, fast_path_agrees, padding_mask_agrees, transformers_model
from tooltune.train.strategy import strategy


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


def train_step(accelerator, loss_module, window, pad_id: int, extra_loss, bottom: FrozenBottom | None = None
                ) -> tuple[float, float, float]:
    """Forward/backward over one window; returns (loss of the step, trained tokens, all tokens), all processes."""
    batches = [collate(mb, pad_id) for mb in window]
    local_trained = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    trained = _sum_over_processes(accelerator, local_trained)
    tokens = _sum_over_processes(accelerator, sum(len(e.input_ids) for mb in window for e in mb))
    scale = accelerator.num_processes / trained
    loss_sum = 0.0
    for i, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        _name_rows(bottom, window[i])
        last = i == len(batches) - 1
        ctx = accelerator.no_sync(loss_module) if not last else contextlib.nullcontext()
        with ctx:
            s, _ = loss_module(**batch)
            loss = s * scale
            if last and extra_loss is not None:
                loss = loss + extra_loss()
            strategy(accelerator).backward(accelerator, loss, last)
        loss_sum += float(s.detach())
    return _sum_over_processes(accelerator, loss_sum) / trained, trained, tokens


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

    `meta`: what the caller adds to run.json (the recipe's data counts, pre-training's corpus).
    `stop_after` ends the loop after that many optimizer steps as if interrupted (no final save): for tests of resume.
    `on_start(model)` is called with the wrapped model before the first step (tests snapshot the initial weights).
    """
    accelerator = _accelerator(cfg)
    set_seed(cfg.train.seed)
    _check_run_dir(cfg, Path(cfg.train.out), resume)
    plan_ = plan(len(train), cfg, accelerator.num_processes)
    run = _start(accelerator, cfg, plan_, model, tokenizer, train, dev, new_token_ids, on_start, resume, meta)
    prog = run.prog
    while prog.step < plan_.total_steps and not run.stopped_early and not run.out_of_time:
        windows = _windows(train, cfg, plan_, prog.epoch, accelerator.process_index, accelerator.num_processes)
        for window in windows[prog.window:]:
            run.step(window)
            last = run.evaluate_and_save()
            if last or run.stopped_early or (stop_after is not None and prog.step >= stop_after):
                break
        if stop_after is not None and prog.step >= stop_after:
            run.bar.close()
            return TrainResult(dataclasses.replace(run.info, interrupted_at=prog.step), run.model)
        if prog.step < plan_.total_steps and not run.stopped_early and not run.out_of_time:
            prog.epoch, prog.window = prog.epoch + 1, 0
    return run.end()


def _accelerator(cfg: RunConfig) -> Accelerator:
    # "no" defers to the launcher (accelerate config / ACCELERATE_MIXED_PRECISION), which defaults to no.
    # cpu=True without CUDA: processes started by `accelerate launch --multi_gpu` / torchrun then join over gloo
    # (MULTI_CPU); accelerate only picks that mode when told it runs on the CPU.
    # DeepSpeed runs on the CPU too, through its own CPU accelerator, so a DeepSpeed launch is never forced to cpu=True.
    return Accelerator(mixed_precision=None if cfg.train.mixed_precision == "no" else cfg.train.mixed_precision,
                       cpu=not torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"),
                       **tracking.accelerator_kwargs(cfg))


@dataclass
class _Run:
    """A run in progress: what each optimizer step, evaluation and save needs, and how far it has come."""
    accelerator: Accelerator
    cfg: RunConfig
    plan: Plan
    model: Any
    """Wrapped by the method (PeftModel, or the model itself for `full`)."""
    tokenizer: Any
    dev: list[Example]
    loss_module: Any
    """The TokenLoss around `model`, as accelerate prepared it."""
    optimizer: Any
    scheduler: Any
    trainable: list
    bottom: FrozenBottom | None
    extra_loss: Callable | None
    prog: Progress
    info: RunInfo
    bar: Any = None
    started: float = 0.0
    seen_tokens: float = 0.0
    seen_trained: float = 0.0
    stopped_early: bool = False
    out_of_time: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.train.out)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def log(self, entry: dict) -> None:
        """Into the history (checkpointed), log.jsonl and the tracker (train.report_to)."""
        self.prog.history.append(entry)
        if self.accelerator.is_main_process:
            with (self.run_dir / rundir.LOG).open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        tracking.log(self.accelerator, entry)

    def step(self, window: list[list[Example]]) -> None:
        """One optimizer step over `window` (train.grad_accum micro-batches), then the method's own work."""
        accelerator, cfg, prog = self.accelerator, self.cfg, self.prog
        loss, trained, tokens = train_step(accelerator, self.loss_module, window, self.pad_id, self.extra_loss,
                                            self.bottom)
        grad_norm = strategy(accelerator).grad_norm(accelerator, self.loss_module, self.trainable,
                                                    cfg.train.max_grad_norm)
        self.optimizer.step()  # a no-op where the strategy steps itself (DeepSpeed)
        self.scheduler.step()
        prog.step, prog.window = prog.step + 1, prog.window + 1
        method_log = methods.after_optimizer_step(cfg.method.name, self.model, prog.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.seen_tokens, self.seen_trained = self.seen_tokens + tokens, self.seen_trained + trained
        elapsed = time.perf_counter() - self.started
        if prog.step % cfg.train.log_every == 0 or prog.step == self.plan.total_steps:
            self.log({"step": prog.step, "epoch": prog.epoch, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                      "grad_norm": grad_norm, "elapsed_s": elapsed, "tokens": self.seen_tokens,
                      "trained_tokens": self.seen_trained, "tokens_per_s": self.seen_tokens / elapsed,
                      "trained_tokens_per_s": self.seen_trained / elapsed, **method_log})
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{self.seen_tokens / elapsed:.0f}")
        self.out_of_time = _out_of_time(accelerator, elapsed, cfg.train.max_minutes)

    def evaluate_and_save(self) -> bool:
        """The dev loss when due (the best adapter kept), a checkpoint when due; True after the run's last step."""
        accelerator, prog, t = self.accelerator, self.prog, self.cfg.train
        last = prog.step == self.plan.total_steps or self.out_of_time
        if self.dev and ((t.eval_every and prog.step % t.eval_every == 0) or last):
            self.stopped_early = _evaluate_and_keep_best(accelerator, self.loss_module, self.model, self.tokenizer,
                                                         self.dev, self.cfg, self.run_dir, prog, self.log, self.bottom)
        # A run cut by train.max_minutes keeps a checkpoint of where it stopped: its last weights stay on disk
        # (the saved adapter is the best dev loss's) and --resume with a larger cap continues it. So does a run with
        # dev data at its last step: the adapter it saves is the best dev loss's, and the last weights would be lost.
        if t.save_every and (prog.step % t.save_every == 0 and not last or self.out_of_time or last and self.dev):
            checkpoint.save(rundir.checkpoint_dir(self.run_dir, prog.step), accelerator,
                            accelerator.unwrap_model(self.loss_module).model, self.optimizer, self.scheduler,
                            vars(prog))
        return last

    def end(self) -> TrainResult:
        """Save the model (without dev data; with it the best is saved already), write run.json and loss.png."""
        accelerator, prog, info = self.accelerator, self.prog, self.info
        self.bar.close()
        if self.out_of_time:
            info = dataclasses.replace(info, stopped_for_time={"step": prog.step, "epoch": prog.epoch,
                                                               "minutes": self.cfg.train.max_minutes})
            accelerator.print(f"tooltune train: train.max_minutes={self.cfg.train.max_minutes:g} reached at step "
                              f"{prog.step} of {self.plan.total_steps}; ending the run there")
        bottom = self.bottom
        if bottom is not None and bottom.cache:
            info = dataclasses.replace(info, frozen_cache_bytes=bottom.nbytes, frozen_cache_hits=bottom.hits,
                                       frozen_cache_misses=bottom.misses)
            accelerator.print(f"tooltune train: frozen-layer cache {bottom.nbytes / 2**20:.0f} MiB, {bottom.hits} "
                              f"batches served from it, {bottom.misses} computed")
        if not self.dev:
            _save_model(accelerator, self.loss_module, self.model, self.tokenizer, self.run_dir)
        info = _final_info(info, prog, self.stopped_early, bool(self.dev))
        if accelerator.is_main_process:
            plot_losses(prog.history, self.run_dir / rundir.LOSS_PLOT)
            rundir.write_info(self.run_dir, info)
        tracking.finish(accelerator)
        accelerator.wait_for_everyone()
        return TrainResult(info, self.model)


def _start(accelerator, cfg: RunConfig, plan_: Plan, model, tokenizer, train, dev, new_token_ids, on_start,
           resume: bool, meta: RunInfo | None) -> _Run:
    """Wrap the model by its method, prepare it with its optimizer, restore a checkpoint (--resume), and open the
    run directory. The order is the one runs were resumed and compared with: each step draws random numbers."""
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
    loss_module = TokenLoss(model, plain=methods.METHODS[cfg.method.name].virtual_tokens, vocab=vocab,
                            skip_padding_mask=cfg.train.skip_padding_mask)
    # The scheduler is stepped here once per optimizer step, so it is not handed to accelerate (which would step it
    # once per process).
    strategy(accelerator).configure(accelerator, cfg)
    loss_module, optimizer = accelerator.prepare(loss_module, optimizer)
    if bottom is not None:
        bottom.set_batch(None)  # the probe is not cached
    pad_id = tokenizer.pad_token_id or 0
    probe = {k: v.to(accelerator.device) for k, v in collate(train[:cfg.train.batch_size], pad_id).items()}
    loss_path = _choose_loss_path(accelerator, loss_module, probe)
    padding_mask = _choose_padding_mask(accelerator, loss_module, probe, pad_id)
    prog = _resume(accelerator, Path(cfg.train.out), model, optimizer, scheduler) if resume else Progress()
    info = dataclasses.replace(
        meta or RunInfo(), method=cfg.method.name, base_model=cfg.model.path, train_examples=len(train),
        dev_examples=len(dev), total_steps=plan_.total_steps, processes=accelerator.num_processes,
        distributed_type=str(accelerator.distributed_type.value), device=str(accelerator.device),
        dropped_batches_per_epoch=plan_.dropped_batches, trainable_parameters=sum(p.numel() for p in trainable),
        loss_path=loss_path, padding_mask=padding_mask, compiled_blocks=compiled_blocks,
        adapted_layers=cfg.method.layers,
        frozen_layers=bottom.cut if bottom else 0, output_vocab=len(vocab) if vocab is not None else "all")
    run = _Run(accelerator, cfg, plan_, model, tokenizer, dev, loss_module, optimizer, scheduler, trainable, bottom,
               methods.extra_loss(cfg.method, model), prog, info)
    if accelerator.is_main_process:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run.run_dir, cfg)
        _write_log(run.run_dir, prog.history)
    tracking.start(accelerator, cfg)
    run.bar = _progress_bar(accelerator, plan_.total_steps, prog.step)
    run.started = time.perf_counter()
    return run


def _resume(accelerator, run_dir: Path, model, optimizer, scheduler) -> Progress:
    found = checkpoint.latest(run_dir)
    if found is None:
        raise ToolTuneError(f"--resume: no checkpoint under {run_dir / rundir.CHECKPOINTS}")
    prog = Progress(**checkpoint.load(found, accelerator, model, optimizer, scheduler))
    accelerator.print(f"resuming from {found} (step {prog.step})")
    return prog


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
        ids.update(t for t in e.labels if t != IGNORE_INDEX)
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
        if strategy(accelerator).shards_parameters:
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


def _choose_loss_path(accelerator, loss_module, batch: dict) -> str:
    """Keep the trained-positions loss only where it equals the model's own loss on a first batch."""
    module = accelerator.unwrap_model(loss_module)
    if module.plain:
        return "full logits (virtual-token method)"
    with accelerator.autocast():
        ok, fast, plain = fast_path_agrees(module, batch)
    if ok:
        return "trained positions only"
    module.plain = True
    why = f"full logits (trained-positions loss {fast:.5f} != model loss {plain:.5f} on batch 1)"
    accelerator.print(f"tooltune train: {type(transformers_model(module.model)).__name__}: {why}; using the plain path")
    return why


def _choose_padding_mask(accelerator, loss_module, batch: dict, pad_id: int) -> str:
    """Run right-padded batches without their attention mask (train.skip_padding_mask) only where a first batch,
    its rows' last tokens made padding, gives the same loss without it."""
    module = accelerator.unwrap_model(loss_module)
    if module.plain or not module.skip_padding_mask:
        module.skip_padding_mask = False
        return "kept" + (" (full-logits path)" if module.plain else "")
    if "attention_mask" not in batch:
        return "none (packed rows)"
    with accelerator.autocast():
        ok, without, with_mask = padding_mask_agrees(module, batch, pad_id)
    if ok:
        return "skipped for right-padded batches (causal attention)"
    module.skip_padding_mask = False
    why = f"kept (loss without it {without:.5f} != with it {with_mask:.5f} on batch 1)"
    accelerator.print(f"tooltune train: {type(transformers_model(module.model)).__name__}: padding mask {why}")
    return why


# Settings a resumed run may change: they do not alter what the steps already taken computed.
RESUMABLE_CHANGES = {"train.cache_frozen", "train.skip_padding_mask", "train.max_steps", "train.max_minutes",
                     "train.epochs", "train.eval_every", "train.early_stopping", "train.save_every", "train.log_every",
                     "train.report_to"}


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
    state_dict = strategy(accelerator).state_dict(accelerator, loss_module, model)
    if accelerator.is_main_process:  # staged, then moved in: a kill never leaves half an adapter
        with staged_directory(run_dir) as staging:
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
    accelerator.wait_for_everyone()


def _final_info(info: RunInfo, prog: Progress, stopped_early: bool, with_dev: bool) -> RunInfo:
    train_losses = [e["loss"] for e in prog.history if "loss" in e]
    return dataclasses.replace(
        info, steps=prog.step, final_train_loss=train_losses[-1] if train_losses else None,
        best_dev_loss=prog.best_dev, stopped_early=stopped_early, saved="best dev loss" if with_dev else "last step",
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
