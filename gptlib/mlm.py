"""BERT's masked language model, built from the same blocks as GPT.

GPT learns by predicting the *next* token, so each position may only look to its left
(causal attention). BERT (Devlin et al., 2019) blanks out some tokens and predicts them
from *both* sides, so its attention is bidirectional. Everything else — embeddings,
blocks, output layer — can be the very same network. This module holds the few pieces
that differ:

- :func:`mask_tokens`: BERT's corruption rule. 15% of positions are chosen; of those,
  80% become ``[MASK]``, 10% a random token, 10% stay as they are. Only the chosen
  positions are scored (the other targets are ``IGNORE`` = -100, which the loss skips).
- :func:`mlm_batches`: random windows of a token stream, corrupted by :func:`mask_tokens`,
  as a ``batch_fn(generator)`` that :func:`gptlib.train.train` accepts as data.
- :func:`make_bidirectional` / :func:`masked_lm`: a :class:`~gptlib.model.GPT` whose
  attention looks both ways, with one extra vocabulary entry for ``[MASK]``.
- blank filling, the task that separates the two: :func:`fill_blanks_mlm` (BERT reads
  the blank's left *and* right context), :func:`fill_blanks_left` (a causal LM guesses
  from the left context alone) and :func:`fill_blanks_scored` (a causal LM tries every
  candidate and keeps the one that makes the whole window most likely).

Because :func:`mlm_batches` returns ``(inputs, targets)`` with ignored targets, the
default language-model loss of :func:`gptlib.train.train` is already the MLM loss.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gptlib.attention import MultiHeadAttention

__all__ = [
    "IGNORE",
    "mask_tokens",
    "mlm_batches",
    "make_bidirectional",
    "masked_lm",
    "blank_positions",
    "fill_blanks_mlm",
    "fill_blanks_left",
    "fill_blanks_scored",
]

#: Target value of positions that are not scored (``F.cross_entropy``'s ``ignore_index``).
IGNORE = -100


def mask_tokens(
    ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    rate: float = 0.15,
    generator: torch.Generator | None = None,
    mask_share: float = 0.8,
    random_share: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``ids`` the BERT way; return ``(inputs, targets)`` of the same shape.

    Each position is chosen with probability ``rate``. A chosen position's target is its
    original id; it becomes ``mask_id`` with probability ``mask_share``, a random id in
    ``[0, vocab_size)`` with probability ``random_share``, and otherwise keeps its id.
    (The random and unchanged cases make the model predict *every* position well, not
    only ``[MASK]``, which never occurs when the model is used.) Unchosen positions keep
    their id and get the target ``IGNORE``.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if mask_share < 0 or random_share < 0 or mask_share + random_share > 1:
        raise ValueError(
            f"need mask_share, random_share >= 0 with a sum <= 1, got {mask_share}, {random_share}"
        )
    ids = ids.long()
    u = torch.rand(ids.shape, generator=generator)
    chosen = u < rate
    # One more uniform number decides what happens to a chosen position.
    action = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (action < mask_share)
    to_random = chosen & (action >= mask_share) & (action < mask_share + random_share)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, targets


def mlm_batches(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    mask_id: int,
    vocab_size: int,
    rate: float = 0.15,
) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A ``batch_fn(generator) -> (inputs, targets)`` of masked random windows of ``data``.

    Pass it to :func:`gptlib.train.train` as training (or validation) data: the default
    loss, cross entropy with ``ignore_index=-100``, is then exactly BERT's MLM loss.
    """
    if data.dim() != 1 or data.numel() <= block_size:
        raise ValueError(f"data must be a 1-D tensor longer than block_size={block_size}")

    def batch_fn(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(data.numel() - block_size, (batch_size,), generator=generator)
        windows = data[starts[:, None] + torch.arange(block_size)].long()
        return mask_tokens(windows, mask_id, vocab_size, rate, generator)

    return batch_fn


def make_bidirectional(model: nn.Module) -> nn.Module:
    """Switch off causality in every attention layer of ``model`` (in place); return it.

    A GPT block's attention applies the causal triangle because its ``causal`` flag is set;
    with the flag off, every position sees every other (unless a ``mask`` is passed).
    Such a model must not be used with ``generate`` or a KV cache, which assume causality.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.causal = False
            n += 1
    if n == 0:
        raise ValueError("make_bidirectional: the model has no gptlib MultiHeadAttention layer.")
    if hasattr(getattr(model, "config", None), "causal"):
        model.config.causal = False  # keep the config truthful: it is saved with checkpoints
    return model


def masked_lm(config) -> nn.Module:
    """A bidirectional GPT for masked language modelling.

    ``config.vocab_size`` must already count the ``[MASK]`` token (the tokenizer's size + 1,
    with ``mask_id = tokenizer.vocab_size``).
    """
    from dataclasses import replace

    from gptlib.model import GPT

    # The config records the bidirectionality, so a saved masked LM reloads as one.
    return GPT(replace(config, causal=False))


# ----------------------------------------------------------------------------- blank filling


def blank_positions(
    n: int, block_size: int, margin: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` random blank positions in a window, at least ``margin`` tokens from both ends
    (so there is context on each side)."""
    if block_size <= 2 * margin:
        raise ValueError(
            f"block_size={block_size} leaves no room for a margin of {margin} on both sides"
        )
    return torch.randint(margin, block_size - margin, (n,), generator=generator)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def fill_blanks_mlm(
    model: nn.Module,
    windows: torch.Tensor,
    positions: torch.Tensor,
    mask_id: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """BERT's guess for ``windows[i, positions[i]]``, which is replaced by ``[MASK]``:
    the arg-max of the model's prediction there, seeing both sides."""
    model.eval()
    device = _device_of(model)
    rows = torch.arange(windows.size(0))
    inputs = windows.clone()
    inputs[rows, positions] = mask_id
    guesses = []
    for s in range(0, len(rows), batch_size):
        logits = model(inputs[s : s + batch_size].to(device))
        r = torch.arange(logits.size(0), device=device)
        pick = logits[r, positions[s : s + batch_size].to(device)]
        pick[:, mask_id] = float("-inf")  # never "predict" [MASK] itself
        guesses.append(pick.argmax(-1).cpu())
    return torch.cat(guesses)


@torch.no_grad()
def fill_blanks_left(
    model: nn.Module, windows: torch.Tensor, positions: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """A causal LM's guess for the blank from its left context only: the arg-max of the
    next-token prediction at ``positions - 1`` (the blank itself and its right are unused)."""
    model.eval()
    device = _device_of(model)
    guesses = []
    for s in range(0, windows.size(0), batch_size):
        logits = model(windows[s : s + batch_size].to(device))
        r = torch.arange(logits.size(0), device=device)
        guesses.append(logits[r, positions[s : s + batch_size].to(device) - 1].argmax(-1).cpu())
    return torch.cat(guesses)


@torch.no_grad()
def fill_blanks_scored(
    model: nn.Module, windows: torch.Tensor, positions: torch.Tensor, candidates: int | torch.Tensor
) -> torch.Tensor:
    """A causal LM fills the blank by trying every candidate token and keeping the one
    that gives the whole window the highest log-likelihood.

    This uses the right context too (a good candidate makes the following tokens likely),
    at the price of one forward pass per candidate: ``len(candidates)`` times the work of
    :func:`fill_blanks_left`. ``candidates`` is a vocabulary size or a 1-D tensor of ids.
    """
    model.eval()
    device = _device_of(model)
    cands = torch.arange(candidates) if isinstance(candidates, int) else torch.as_tensor(candidates)
    cands = cands.to(device)
    guesses = []
    for window, p in zip(windows.to(device), positions.tolist()):
        trial = window.repeat(len(cands), 1)
        trial[:, p] = cands
        logp = F.log_softmax(model(trial[:, :-1]).float(), dim=-1)
        token_logp = logp.gather(-1, trial[:, 1:, None]).squeeze(-1)  # (C, T-1)
        # Tokens before the blank do not depend on the candidate: score from the blank on.
        guesses.append(cands[token_logp[:, p - 1 :].sum(-1).argmax()].cpu())
    return torch.stack(guesses)
