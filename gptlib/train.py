"""The training loop: one readable loop that trains every model in the book.

Language models, classifiers and reward models all train the same way: draw a batch,
compute a loss, back-propagate, let AdamW take a step, now and then measure the loss on
held-out data. :func:`train` is that loop, with the details a real run needs:

- **learning-rate schedule** (:func:`lr_at`): a short linear warm-up, then a cosine decay
  to ``min_lr``;
- **gradient accumulation**: ``grad_accum_steps`` micro-batches per optimizer step, to
  reach a large batch on a small device;
- **gradient clipping** at ``grad_clip`` (global L2 norm), against rare huge updates;
- **mixed precision**: bf16 autocast on CUDA (``amp``); exact fp32 on the CPU;
- **evaluation** every ``eval_interval`` steps: the mean loss over ``eval_iters`` batches,
  with dropout off and no gradients;
- **checkpoints** in ``out_dir`` that resume *exactly*: on the CPU, training to 200,
  saving, and resuming to 400 gives the very same losses as training to 400 in one go;
- **data parallelism** across GPUs (or CPU processes) when launched with ``torchrun``;
- a **history** of losses that chapters plot live through ``callback``.

Reproducibility comes from owning every source of randomness. Training batches come from a
``torch.Generator`` seeded with ``cfg.seed``, evaluation batches from a second generator
(so that evaluating, or not, never changes which batches training sees), and dropout from
torch's global generator, seeded at the start of ``train``. A checkpoint stores all of them.

From the command line (the TOML file's top level holds :class:`TrainConfig` fields, its
``[model]`` table the :class:`~gptlib.model.GPTConfig` and ``[data]`` the dataset)::

    python -m gptlib.train gptlib/configs/shakespeare_char_tiny.toml --max_iters 200 \\
        --out_dir runs/x
    torchrun --nproc_per_node=8 -m gptlib.train gptlib/configs/shakespeare_char.toml

From Python::

    cfg = TrainConfig(max_iters=500, batch_size=32, block_size=128)
    result = train(model, cfg, train_ids, val_ids)
    plt.plot(*result.curve("val_loss"))
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from gptlib.checkpoint import (
    checkpoint_paths,
    decode_bytes_tensor,
    encode_bytes_tensor,
    load_checkpoint,
    save_checkpoint,
    save_model,
    unwrap_model,
)
from gptlib.device import autocast, enable_tf32, get_device, maybe_compile
from gptlib.distributed import DistInfo, setup_distributed
from gptlib.evaluate import heldout_loss
from gptlib.settings import SettingsError, parse_overrides
from gptlib.trainconfig import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "lr_at", "train", "lm_batch_loss", "main"]

#: A data source: a 1-D tensor of token ids (random windows are cut from it), or a function
#: ``batch_fn(generator) -> batch`` for anything else (classification pairs, preferences...).
DataSource = torch.Tensor | Callable[[torch.Generator], Any]
#: ``loss_fn(model, batch) -> scalar tensor``.
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


# --------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Learning rate for step ``it`` (0-based): linear warm-up, then cosine decay to ``min_lr``.

    Warm-up matters because Adam's second-moment estimates are poor for the first steps, and
    large steps from a random start can push LayerNorms and logits into bad regions. The
    warm-up uses ``(it + 1) / (warmup_iters + 1)`` so that step 0 is not a wasted zero step.
    The cosine then spends most of its time at a high rate and slows gently at the end.
    """
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.decay_iters:
        return cfg.min_lr
    progress = (it - cfg.warmup_iters) / max(1, cfg.decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # goes 1 -> 0
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


# --------------------------------------------------------------------------------------
# Batches and losses
# --------------------------------------------------------------------------------------


def lm_batch_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The default ``loss_fn``: next-token cross entropy of ``model(x)`` against ``y``."""
    from gptlib.model import lm_loss

    x, y = batch
    logits = model(x)
    if isinstance(logits, tuple):  # models that return (logits, extra)
        logits = logits[0]
    return lm_loss(logits, y)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _draw(
    source: DataSource,
    generator: torch.Generator,
    cfg: TrainConfig,
    device: torch.device,
    ddp: DistInfo,
) -> Any:
    """This process's share of the next global batch.

    Every process draws the *same* global batch from its identically seeded generator and
    keeps its own slice: N processes with ``batch_size`` B then see exactly what one process
    with batch N*B would, and the generators stay in lock-step without communicating.
    """
    if callable(source):
        # A batch_fn makes batches of its own size: the global batch is world_size calls.
        batches = [source(generator) for _ in range(ddp.world_size)]
        return _to_device(batches[ddp.rank], device)
    from gptlib.data import get_batch

    x, y = get_batch(
        source, cfg.batch_size * ddp.world_size, cfg.block_size, generator=generator, device=device
    )
    if ddp.enabled:
        rows = slice(ddp.rank * cfg.batch_size, (ddp.rank + 1) * cfg.batch_size)
        x, y = x[rows], y[rows]
    return x, y


def _eval_generator(cfg: TrainConfig, iter_num: int) -> torch.Generator:
    # Re-seeded from (seed, step) at every evaluation: an evaluation's batches depend only on
    # *when* it happens, never on how many evaluations came before. So evaluating more or
    # less often, or resuming from a checkpoint, leaves every other number unchanged.
    return torch.Generator().manual_seed((cfg.seed + 1) * 1_000_003 + iter_num)


@torch.no_grad()
def _estimate_loss(
    model: torch.nn.Module,
    source: DataSource,
    loss_fn: LossFn,
    cfg: TrainConfig,
    device: torch.device,
    ddp: DistInfo,
    generator: torch.Generator,
) -> float:
    """Mean loss over ``cfg.eval_iters`` batches, dropout off (``model.eval()``), no gradients.

    Under DDP every process evaluates its slice of each batch and the means are averaged,
    which gives the same number as one process evaluating the whole batch.
    """

    def draw(gen: torch.Generator) -> Any:
        return _draw(source, gen, cfg, device, ddp)

    def loss(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        with autocast(device, enabled=cfg.amp):
            return loss_fn(m, batch).float()

    mean = heldout_loss(
        model, draw, iters=cfg.eval_iters, loss_fn=loss, device=device, generator=generator
    )
    if ddp.enabled:
        total = torch.tensor(mean, device=device)
        dist.all_reduce(total)
        return total.item() / ddp.world_size
    return mean


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` hands back.

    ``history`` is a list of dicts, one per ``log_interval`` steps and one per evaluation.
    Every entry has ``iter`` (optimizer steps done), ``lr`` and ``time`` (seconds since the
    run started). Training entries add ``train_loss`` (mean over the steps since the previous
    entry) and ``grad_norm`` (last step, before clipping); evaluation entries add
    ``val_loss`` (and ``eval_train_loss`` with ``eval_train``). Entry ``iter=0`` holds the
    loss of the untrained model.
    """

    model: torch.nn.Module
    history: list[dict[str, Any]]
    best_val_loss: float | None
    final_val_loss: float | None
    tokens_per_sec: float  # training throughput, all processes together, evals excluded
    iters: int  # optimizer steps done in total (including before a resume)
    elapsed_s: float  # wall time of this call
    checkpoint: Path | None = None  # last checkpoint written, if any
    config: TrainConfig | None = None

    def curve(self, key: str = "train_loss") -> tuple[list[int], list[float]]:
        """``(iters, values)`` of ``key`` over the history, ready for ``plt.plot``."""
        points = [(h["iter"], h[key]) for h in self.history if key in h]
        return [p[0] for p in points], [p[1] for p in points]


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def _rng_snapshot(train_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {
        "train_generator": encode_bytes_tensor(train_gen.get_state()),
        "torch": encode_bytes_tensor(torch.get_rng_state()),
    }
    if device.type == "cuda":
        state["cuda"] = encode_bytes_tensor(torch.cuda.get_rng_state(device))
    return state


def _restore_rng(
    state: Mapping[str, Any], train_gen: torch.Generator, device: torch.device
) -> None:
    train_gen.set_state(decode_bytes_tensor(state["train_generator"]))
    torch.set_rng_state(decode_bytes_tensor(state["torch"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(decode_bytes_tensor(state["cuda"]), device)


def _make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    if hasattr(model, "configure_optimizer"):
        return model.configure_optimizer(
            weight_decay=cfg.weight_decay, lr=cfg.lr, betas=cfg.betas, device_type=device.type
        )
    # Same rule as GPT.configure_optimizer: decay matrices and embeddings, not biases or norms.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def train(
    model: torch.nn.Module,
    cfg: TrainConfig,
    train_data: DataSource,
    val_data: DataSource | None = None,
    *,
    loss_fn: LossFn | None = None,
    resume: str | os.PathLike | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place and return a :class:`TrainResult`.

    ``train_data`` / ``val_data``: 1-D tensors of token ids (random ``block_size`` windows
    are cut from them) or callables ``batch_fn(generator) -> batch`` that must draw their
    randomness from ``generator``. ``loss_fn(model, batch)`` defaults to the language-model
    loss on ``(x, y)`` batches; under DDP it receives the wrapped model, so it should call the
    model rather than reach into its attributes. ``resume`` continues from a checkpoint made
    by an earlier run (its model, optimizer, step, RNG states and history); ``cfg`` may differ,
    e.g. a larger ``max_iters``. ``callback(entry)`` is called with each new history entry.

    Note: ``train`` seeds torch's global RNG with ``cfg.seed`` (it drives dropout).
    """
    loss_fn = loss_fn or lm_batch_loss
    ddp = setup_distributed(cfg.device)
    try:
        return _train(model, cfg, train_data, val_data, loss_fn, resume, callback, ddp)
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _train(
    model, cfg, train_data, val_data, loss_fn, resume, callback, ddp: DistInfo
) -> TrainResult:
    device = torch.device(cfg.device) if cfg.device else get_device()
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    if device.type == "cuda":
        enable_tf32()

    # Randomness. Data generators are seeded identically on every process (they must draw the
    # same global batches); dropout gets a different seed per process (different masks).
    torch.manual_seed(cfg.seed + ddp.rank)
    train_gen = torch.Generator().manual_seed(cfg.seed)

    raw_model = unwrap_model(model).to(device)
    optimizer = _make_optimizer(raw_model, cfg, device)
    iter_num, history, best_val = 0, [], None
    if resume is not None:
        meta = load_checkpoint(resume, raw_model, optimizer)
        iter_num, history, best_val = meta["iter"], meta["history"], meta.get("best_val_loss")
        rng = meta["rng"]
        per_rank = rng.get("torch_per_rank")
        if per_rank and len(per_rank) == ddp.world_size:
            rng = {**rng, "torch": per_rank[ddp.rank]}
        _restore_rng(rng, train_gen, device)

    # forward_model computes (compiled or not); step_model also synchronises gradients.
    forward_model = maybe_compile(raw_model, cfg.compile)
    step_model = forward_model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_model = DDP(
            forward_model, device_ids=[device.index] if device.type == "cuda" else None
        )

    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt_interval = cfg.ckpt_interval or cfg.eval_interval
    last_ckpt: Path | None = None
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps * ddp.world_size
    start_iter, start_time = iter_num, time.perf_counter()
    side_time = 0.0  # seconds spent evaluating and checkpointing: left out of tokens/s
    # A resumed run's clock continues where the checkpointed one stopped, for plots vs time.
    time_offset = history[-1].get("time", 0.0) if history else 0.0

    def log(entry: dict[str, Any]) -> None:
        entry["time"] = round(time_offset + time.perf_counter() - start_time, 4)
        history.append(entry)
        if callback is not None and ddp.is_main:
            callback(entry)

    def evaluate(entry: dict[str, Any]) -> None:
        nonlocal best_val, side_time
        t0 = time.perf_counter()
        gen = _eval_generator(cfg, iter_num)
        entry["val_loss"] = _estimate_loss(forward_model, val_data, loss_fn, cfg, device, ddp, gen)
        if cfg.eval_train:
            entry["eval_train_loss"] = _estimate_loss(
                forward_model, train_data, loss_fn, cfg, device, ddp, gen
            )
        best_val = entry["val_loss"] if best_val is None else min(best_val, entry["val_loss"])
        side_time += time.perf_counter() - t0

    def save() -> Path:
        nonlocal side_time
        t0 = time.perf_counter()
        # RNG states of every process (dropout seeds differ per rank), gathered to rank 0.
        rng = _rng_snapshot(train_gen, device)
        if ddp.enabled:
            per_rank: list[Any] = [None] * ddp.world_size
            dist.all_gather_object(per_rank, rng["torch"])
            rng["torch_per_rank"] = per_rank
        path = out_dir / "ckpt"
        if ddp.is_main:
            config = getattr(raw_model, "config", None)
            save_checkpoint(
                path,
                raw_model,
                optimizer,
                meta={
                    "iter": iter_num,
                    "train_config": cfg.to_dict(),
                    "model_config": dataclasses.asdict(config)
                    if dataclasses.is_dataclass(config)
                    else None,
                    "best_val_loss": best_val,
                    "world_size": ddp.world_size,
                    "rng": rng,
                    "history": history,
                },
            )
        if ddp.enabled:
            dist.barrier()  # nobody races ahead (or exits) while rank 0 is still writing
        side_time += time.perf_counter() - t0
        return checkpoint_paths(path)[0]

    if iter_num == 0 and val_data is not None:
        entry = {"iter": 0, "lr": lr_at(0, cfg)}
        evaluate(entry)
        log(entry)
    loop_start, side_time = time.perf_counter(), 0.0

    bar = None
    if cfg.progress and ddp.is_main and iter_num < cfg.max_iters:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.max_iters, initial=iter_num, desc="train", unit="it", dynamic_ncols=True
        )

    try:
        raw_model.train()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no GPU sync per step
        steps_in_sum, grad_norm = 0, None
        while iter_num < cfg.max_iters:
            lr = lr_at(iter_num, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr

            for micro_step in range(cfg.grad_accum_steps):
                batch = _draw(train_data, train_gen, cfg, device, ddp)
                # DDP all-reduces gradients after every backward; during accumulation only the
                # last micro-step's reduction is needed, so skip the others with no_sync().
                last_micro = micro_step == cfg.grad_accum_steps - 1
                sync = (
                    contextlib.nullcontext()
                    if (last_micro or not ddp.enabled)
                    else step_model.no_sync()
                )
                with sync:
                    with autocast(device, enabled=cfg.amp):
                        loss = loss_fn(step_model, batch)
                    # Dividing by the number of micro-steps makes the summed gradients an average,
                    # so the effective learning rate does not depend on grad_accum_steps.
                    (loss / cfg.grad_accum_steps).backward()
                loss_sum += loss.detach().float() / cfg.grad_accum_steps

            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # frees the gradient memory until next backward
            iter_num += 1
            steps_in_sum += 1

            is_last = iter_num == cfg.max_iters
            eval_now = val_data is not None and (iter_num % cfg.eval_interval == 0 or is_last)
            if iter_num % cfg.log_interval == 0 or eval_now or is_last:
                if ddp.enabled:
                    dist.all_reduce(loss_sum)  # each process saw a different slice: average them
                    loss_sum /= ddp.world_size
                entry = {"iter": iter_num, "lr": lr, "train_loss": loss_sum.item() / steps_in_sum}
                if grad_norm is not None:
                    entry["grad_norm"] = float(grad_norm)
                loss_sum.zero_()
                steps_in_sum = 0
                if eval_now:
                    evaluate(entry)
                log(entry)
                if bar is not None:
                    postfix = {"loss": f"{entry['train_loss']:.4f}", "lr": f"{lr:.2e}"}
                    if best_val is not None:
                        postfix["val"] = f"{history_last(history, 'val_loss'):.4f}"
                    bar.set_postfix(postfix, refresh=False)
            if bar is not None:
                bar.update(1)
            if out_dir is not None and (iter_num % ckpt_interval == 0 or is_last):
                last_ckpt = save()
    finally:
        if bar is not None:
            bar.close()  # also when interrupted (Ctrl-C, an exception in a callback)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the GPU runs behind the Python loop: wait for it
    train_time = time.perf_counter() - loop_start - side_time
    steps_done = iter_num - start_iter
    return TrainResult(
        model=raw_model,
        history=history,
        best_val_loss=best_val,
        final_val_loss=history_last(history, "val_loss"),
        tokens_per_sec=steps_done * tokens_per_step / train_time if train_time > 0 else 0.0,
        iters=iter_num,
        elapsed_s=time.perf_counter() - start_time,
        checkpoint=last_ckpt,
        config=cfg,
    )


def history_last(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The most recent value of ``key`` in a training history (None if never recorded)."""
    for entry in reversed(history):
        if key in entry:
            return entry[key]
    return None


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, vocab_size: int) -> torch.nn.Module:
    """The GPT described by ``cfg.model``: vocab size from the tokenizer, block size from
    the training config unless the table says otherwise."""
    from gptlib.model import GPT, GPTConfig

    table = {"block_size": cfg.block_size, **cfg.model, "vocab_size": vocab_size}
    return GPT(GPTConfig(**table))


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """``python -m gptlib.train <config.toml> [--key value ...] [--resume ckpt]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            __doc__.split("\n\n")[0] + "\n\nusage: python -m gptlib.train CONFIG.toml "
            "[--key value ...] [--resume PATH]\nkeys: "
            + ", ".join(
                sorted(
                    f.name
                    for f in dataclasses.fields(TrainConfig)
                    if f.name not in ("model", "data")
                )
            )
            + ", model.<field>, data.<field>"
        )
        raise SystemExit(0 if argv else 2)
    try:
        config_path, overrides = argv[0], parse_overrides(argv[1:])
        resume = overrides.pop("resume", None)
        cfg = TrainConfig.from_toml(config_path, **overrides)
    except (SettingsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None

    from gptlib.data import train_val_tokens

    tokenizer, train_ids, val_ids = train_val_tokens(**cfg.data)
    model = build_model(cfg, tokenizer.vocab_size)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        print(
            f"model: {model.num_params() / 1e6:.2f}M parameters ({cfg.model}), "
            f"data: {train_ids.numel():,} train / {val_ids.numel():,} val tokens"
        )
    result = train(model, cfg, train_ids, val_ids, resume=resume)

    if is_main:
        if cfg.out_dir:
            out_dir = Path(cfg.out_dir)
            tokenizer.save(out_dir / "tokenizer.json")
            save_model(out_dir / "model.safetensors", result.model)
            print(
                f"saved checkpoint {out_dir / 'ckpt'}, model {out_dir / 'model.safetensors'}, "
                f"tokenizer {out_dir / 'tokenizer.json'}"
            )
        val = f"{result.final_val_loss:.4f}" if result.final_val_loss is not None else "n/a"
        print(
            f"final val loss {val} after {result.iters} iters, "
            f"{result.elapsed_s:.1f} s, {result.tokens_per_sec:,.0f} tokens/s"
        )
        # Resuming reproduces an uninterrupted run exactly (on the CPU), so the command that
        # rebuilds this model from scratch is the same one without --resume.
        rebuild = [
            a
            for i, a in enumerate(argv)
            if not (a.startswith("--resume") or (i and argv[i - 1] == "--resume"))
        ]
        print("rebuild with: python -m gptlib.train " + shlex.join(rebuild))
    return result


if __name__ == "__main__":
    main()
