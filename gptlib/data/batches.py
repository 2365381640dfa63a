"""From documents to batches.

1. :func:`split_documents` holds out whole documents (plays, files) for validation. Cutting
   one long text at 90% would let the model see the first acts of the validation play;
   whole-document splits measure generalisation to *new* documents.
2. :func:`encode_documents` tokenizes each document and concatenates them into one long
   1-D tensor of ids, with a separator between documents.
3. :func:`get_batch` cuts ``batch_size`` random windows of ``block_size + 1`` ids out of it:
   the input ``x`` is the window without its last id, the target ``y`` the window without
   its first, so at every position the model learns to predict the next token.
4. :func:`mixture_batches` / :func:`mixture_epochs`: batches drawn from several corpora with
   weights (chapter 7).
"""

from __future__ import annotations

import random
from typing import Callable

import torch

from gptlib.tokenizer import Tokenizer

__all__ = ["split_documents", "encode_documents", "get_batch", "mixture_batches", "mixture_epochs"]

# --------------------------------------------------------------------------------------
# Splitting, encoding, batching
# --------------------------------------------------------------------------------------


def split_documents(
    docs: dict[str, str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, str], dict[str, str]]:
    """Split whole documents into ``(train, val)``, never cutting inside a document.

    The keys are sorted, then shuffled with ``random.Random(seed)``: the split depends only
    on the set of names and the seed, not on dict order. Validation gets
    ``round(val_fraction * len(docs))`` documents, but always at least one, and training too.
    Both returned dicts keep the sorted key order.
    """
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split, got {len(docs)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    names = sorted(docs)
    shuffled = names.copy()
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(val_fraction * len(names))), len(names) - 1)
    val_names = set(shuffled[:n_val])
    train = {k: docs[k] for k in names if k not in val_names}
    val = {k: docs[k] for k in names if k in val_names}
    return train, val


def encode_documents(docs: dict[str, str], tokenizer: Tokenizer, sep: str = "\n\n") -> torch.Tensor:
    """Tokenize each document and concatenate them, with ``sep`` between documents.

    Documents are encoded one by one, so a BPE token never spans two documents. Returns
    a 1-D ``torch.long`` tensor.
    """
    sep_ids = tokenizer.encode(sep) if sep else []
    ids: list[int] = []
    for k, text in enumerate(docs.values()):
        if k:
            ids.extend(sep_ids)
        ids.extend(tokenizer.encode(text))
    return torch.tensor(ids, dtype=torch.long)


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows from ``data``: inputs ``x`` and targets ``y``.

    Both are ``(batch_size, block_size)`` long tensors with ``y[:, t] == x[:, t + 1]``
    (the next token). Window starts come from ``torch.randint(..., generator=generator)``:
    saving ``generator.get_state()`` in a checkpoint and restoring it reproduces the exact
    sequence of batches. ``data`` may use any integer dtype (e.g. uint16 to save memory).
    """
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    n = data.numel()
    if n < block_size + 1:
        raise ValueError(
            f"data has {n} tokens but a window needs block_size + 1 = {block_size + 1} "
            "(inputs plus the shifted targets). Use a smaller block_size or more data."
        )
    # Starts in [0, n - block_size - 1], so start + block_size is still a valid index.
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    windows = data[(starts[:, None] + offsets).to(data.device)].long()
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        # Page-locked memory lets the copy to the GPU run asynchronously (non_blocking),
        # overlapping with the computation already queued on the GPU.
        x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.to(device), y.to(device)


# --------------------------------------------------------------------------------------
# Mixtures of corpora (chapter 7)
# --------------------------------------------------------------------------------------


def _normalized_weights(
    sources: dict[str, torch.Tensor], weights: dict[str, float]
) -> dict[str, float]:
    if set(weights) != set(sources):
        raise ValueError(
            f"weights must name exactly the sources: sources {sorted(sources)}, "
            f"weights {sorted(weights)}"
        )
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weights must be >= 0 and not all 0, got {weights}")
    total = float(sum(weights.values()))
    return {k: weights[k] / total for k in sources}


def mixture_batches(
    sources: dict[str, torch.Tensor],
    weights: dict[str, float],
    block_size: int,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A ``batch_fn(generator) -> (x, y)`` that samples windows from several corpora by weight.

    Like GPT-3's training mix: each row of a batch first draws its source with probability
    ``weights[name] / sum(weights)`` (so the share of *training tokens* from a source is its
    weight, whatever the source's size), then a random window of that source
    (:func:`get_batch`). A small source with a large weight is seen many times per epoch of
    the mixture; a large one with a small weight is never seen whole (see :func:`mixture_epochs`).

    ``sources``: name -> 1-D tensor of token ids (one shared tokenizer). All randomness comes
    from ``generator``, so the function plugs into :func:`gptlib.train.train` as its data.
    """
    probs = _normalized_weights(sources, weights)
    names = list(sources)
    for name in names:
        if sources[name].dim() != 1 or sources[name].numel() < block_size + 1:
            raise ValueError(
                f"source {name!r} must be a 1-D tensor of more than block_size = "
                f"{block_size} token ids, got shape {tuple(sources[name].shape)}"
            )
    p = torch.tensor([probs[n] for n in names], dtype=torch.float64)

    def batch_fn(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        which = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        x = torch.empty(batch_size, block_size, dtype=torch.long)
        y = torch.empty(batch_size, block_size, dtype=torch.long)
        for k, name in enumerate(names):  # a fixed order: same generator, same batch
            rows = (which == k).nonzero().flatten()
            if rows.numel():
                x[rows], y[rows] = get_batch(sources[name], rows.numel(), block_size, generator)
        return x.to(device), y.to(device)

    batch_fn.weights = probs  # type: ignore[attr-defined]
    return batch_fn


def mixture_epochs(
    sources: dict[str, torch.Tensor], weights: dict[str, float], total_tokens: int
) -> dict[str, float]:
    """How many times each source is seen when training on ``total_tokens`` of the mixture.

    ``weight share * total_tokens / source tokens``: GPT-3's "epochs elapsed when training for
    300B tokens" column (e.g. Wikipedia 3.4 epochs, filtered Common Crawl 0.44).
    """
    probs = _normalized_weights(sources, weights)
    return {k: probs[k] * total_tokens / sources[k].numel() for k in sources}


__all__ += ["mixture_batches", "mixture_epochs"]
