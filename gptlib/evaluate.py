"""The two measurements every chapter makes of a language model, in one place.

* :func:`heldout_loss`: mean next-token cross-entropy over held-out data (nats per token).
  :func:`perplexity` is ``exp`` of it over fixed, non-overlapping windows.
* :func:`continuation_logprobs`: ``log P(continuation | prefix)`` for a batch of pairs,
  summed (or averaged) over the continuation's tokens: how GPT-2/3 score multiple-choice
  answers, how SFT/DPO/PPO score a response, how FIM scores a middle.

Both switch the model to eval mode (dropout off) and back to whatever mode it was in, and
compute no gradients unless asked: a measurement never changes what it measures.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "eval_mode",
    "token_logprobs",
    "heldout_loss",
    "perplexity",
    "continuation_logprobs",
    "random_windows",
    "sequential_windows",
]

IGNORE = -100


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with eval_mode(model):`` dropout off inside, the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` per position: ``(B, T, V), (B, T) -> (B, T)``.

    Targets equal to -100 (ignored positions) give 0.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return out.masked_fill(targets == IGNORE, 0.0)


def random_windows(
    ids: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``ids``: inputs ``x`` and next-token targets ``y``."""
    if ids.numel() <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens, got {ids.numel()}")
    starts = torch.randint(ids.numel() - block_size, (batch_size,), generator=generator)
    x = torch.stack([ids[s : s + block_size] for s in starts.tolist()])
    y = torch.stack([ids[s + 1 : s + 1 + block_size] for s in starts.tolist()])
    return x, y


def _lm_loss(model: torch.nn.Module, batch) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE
    )


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module,
    data: torch.Tensor | Iterable | Callable[[torch.Generator], object],
    *,
    block_size: int | None = None,
    batch_size: int = 16,
    iters: int = 20,
    seed: int = 0,
    loss_fn: Callable | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Mean loss of ``model`` on held-out ``data``, in eval mode, no gradients.

    ``data`` is a 1-D tensor of token ids (``iters`` batches of random ``block_size``
    windows, drawn with ``seed``: the same windows every call), an iterable of batches, or
    a function ``batch_fn(generator) -> batch``. ``loss_fn(model, batch)`` defaults to
    next-token cross-entropy on ``(x, y)`` batches. ``generator`` replaces the one seeded
    with ``seed`` (the training loop passes its own, so evaluations are reproducible).
    """
    loss_fn = loss_fn or _lm_loss
    device = device or next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    if isinstance(data, torch.Tensor):
        if block_size is None:
            block_size = getattr(getattr(model, "config", None), "block_size", None)
            if block_size is None:
                raise ValueError("heldout_loss on a tensor of ids needs block_size=")
        ids = data
        batches: Iterable = (
            random_windows(ids, block_size, batch_size, generator) for _ in range(iters)
        )
    elif callable(data):
        batches = (data(generator) for _ in range(iters))
    else:
        batches = data
    total, n = 0.0, 0
    with eval_mode(model):
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                batch = tuple(b.to(device) if isinstance(b, torch.Tensor) else b for b in batch)
            # weight each batch by its rows, so a short last batch counts for what it holds
            rows = (
                batch[0].shape[0] if isinstance(batch, tuple) and hasattr(batch[0], "shape") else 1
            )
            total += float(loss_fn(model, batch)) * rows
            n += rows
    if n == 0:
        raise ValueError("heldout_loss got no batches")
    return total / n


def sequential_windows(
    ids: torch.Tensor, block_size: int, max_windows: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping (input, target) windows of ``block_size`` tokens from a 1-D id tensor."""
    n = (ids.numel() - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(
            f"need more than {block_size} tokens to make one evaluation window, got {ids.numel()}"
        )
    x = ids[: n * block_size].view(n, block_size)
    y = ids[1 : n * block_size + 1].view(n, block_size)
    return x, y


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    ids: torch.Tensor,
    block_size: int | None = None,
    max_windows: int | None = 64,
    batch_size: int = 16,
) -> float:
    """``exp(mean next-token cross entropy)`` of ``model`` on the 1-D token ids ``ids``.

    The text is cut into non-overlapping windows of ``block_size`` tokens (the model's own
    ``config.block_size`` by default); the first ``max_windows`` are used (all with ``None``).
    Every model compared on the same ids sees exactly the same windows.
    """
    block_size = block_size or model.config.block_size
    x, y = sequential_windows(ids, block_size, max_windows)
    # quantized modules may hold no parameters: take the device from the state dict
    device = next(iter(model.state_dict().values())).device
    batches = (
        (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)
    )
    return math.exp(heldout_loss(model, batches, device=device))


def continuation_logprobs(
    model: torch.nn.Module,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    reduce: str = "sum",
    grad: bool = False,
    batch_size: int = 64,
) -> torch.Tensor:
    """``log P(continuation | prefix)`` for each pair of token-id lists: a ``(N,)`` tensor.

    ``reduce``: ``"sum"`` (the log-probability of the whole continuation), ``"mean"`` (per
    token), or ``"none"`` (a ``(N, L)`` tensor, right-padded with 0). Runs in eval mode;
    ``grad=True`` keeps the graph (DPO's loss) and leaves the model's mode alone, so the
    caller decides about dropout.
    """
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    if reduce not in ("sum", "mean", "none"):
        raise ValueError(f"reduce must be 'sum', 'mean' or 'none', not {reduce!r}")
    device = next(model.parameters()).device
    limit = getattr(getattr(model, "config", None), "block_size", None)
    outs: list[torch.Tensor] = []
    ctx = contextlib.nullcontext() if grad else eval_mode(model)
    with ctx, torch.set_grad_enabled(grad):
        for start in range(0, len(prefixes), batch_size):
            pre = prefixes[start : start + batch_size]
            cont = continuations[start : start + batch_size]
            seqs = [list(p) + list(c) for p, c in zip(pre, cont)]
            if any(len(c) == 0 for c in cont):
                raise ValueError("every continuation needs at least one token")
            if any(len(p) == 0 for p in pre):
                raise ValueError("every prefix needs at least one token (a start symbol)")
            T = max(len(s) for s in seqs) - 1
            if limit is not None and T > limit:
                raise ValueError(
                    f"prefix + continuation is {T + 1} tokens; the model's context is "
                    f"{limit}: shorten the prefix"
                )
            x = torch.zeros(len(seqs), T, dtype=torch.long)
            y = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
            for i, (s, p) in enumerate(zip(seqs, pre)):
                x[i, : len(s) - 1] = torch.tensor(s[:-1])
                y[i, len(p) - 1 : len(s) - 1] = torch.tensor(s[len(p) :])
            x, y = x.to(device), y.to(device)
            lp = token_logprobs(model(x), y)
            mask = y != IGNORE
            if reduce == "sum":
                outs.append(lp.sum(-1))
            elif reduce == "mean":
                outs.append(lp.sum(-1) / mask.sum(-1))
            else:
                rows = [lp[i][mask[i]] for i in range(len(seqs))]
                outs.append(torch.nn.utils.rnn.pad_sequence(rows, batch_first=True))
    if reduce == "none":
        width = max(o.size(1) for o in outs)
        outs = [F.pad(o, (0, width - o.size(1))) for o in outs]
    return torch.cat(outs)
