"""Heads: small layers put on top of a GPT to turn it into a classifier or a scorer.

GPT-1's recipe (Radford et al., 2018) is *generative pre-training, then discriminative
fine-tuning*: a language model is trained on raw text, then a single linear layer is added on
top of its final hidden states and the whole network is trained on a labelled task::

    ids (B, T) -> GPT.hidden_states -> (B, T, n_embd) -> pool -> (B, n_embd)
               -> Linear -> (B, n_classes)

:class:`SequenceClassifier` is that model. Pooling turns one vector per position into one
vector per sequence:

- ``pool="last"``: the hidden state of the last real token. In a causal model it is the only
  position that has seen the whole sequence (GPT-1 appended an "extract" token and read its
  state; a reward model reads the state after the answer's last token).
- ``pool="mean"``: the average over the real tokens (padding excluded).

Sequences of different lengths are padded on the right; ``mask`` says which positions are
real. Because attention is causal, a real token never attends to the padding after it, so
right padding changes nothing the head reads.

The same class with ``n_classes=1`` is a scalar scorer, e.g. the reward model of RLHF
(:meth:`SequenceClassifier.score`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SequenceClassifier", "pool_hidden", "pad_right"]

Pool = Literal["last", "mean"]


def pad_right(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists on the right to one length: ``(ids (B, T), mask (B, T) bool)``."""
    if not sequences:
        raise ValueError("pad_right needs at least one sequence")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("pad_right got an empty sequence: every sequence needs at least one token")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.bool)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


def pool_hidden(
    h: torch.Tensor, mask: torch.Tensor | None = None, pool: Pool = "last"
) -> torch.Tensor:
    """One vector per sequence from hidden states ``h`` ``(B, T, C)``.

    ``mask`` ``(B, T)`` marks the real tokens (right padding); ``None`` means all are real.
    ``"last"`` takes the state at the last real position, ``"mean"`` averages the real ones.
    """
    B, T, _ = h.shape
    if mask is None:
        return h[:, -1] if pool == "last" else h.mean(dim=1)
    if mask.shape != (B, T):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected (B, T) = {(B, T)}")
    mask = mask.to(h.device)
    lengths = mask.long().sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("a sequence in the batch has no real token (its mask row is all False)")
    if pool == "last":
        return h[torch.arange(B, device=h.device), lengths - 1]
    if pool == "mean":
        weights = mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1): 1 on real tokens, 0 on padding
        return (h * weights).sum(dim=1) / lengths.to(h.dtype).unsqueeze(-1)
    raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")


class SequenceClassifier(nn.Module):
    """A GPT with a linear head on its pooled final hidden states.

    Args:
        gpt: a :class:`gptlib.model.GPT` (pre-trained or freshly initialised); it is fine-tuned
            together with the head, and its ``lm_head`` stays usable for an auxiliary LM loss.
        n_classes: number of outputs (1 for a scalar score such as a reward).
        pool: ``"last"`` or ``"mean"`` (see :func:`pool_hidden`).
        dropout: dropout on the pooled vector before the head (GPT-1 used 0.1).

    ``forward(idx, mask)`` returns logits ``(B, n_classes)``; :meth:`forward_with_lm` also
    returns the language-model logits from the *same* forward pass, for GPT-1's combined
    objective ``L = L_cls + lambda * L_lm``.
    """

    def __init__(
        self, gpt: nn.Module, n_classes: int, pool: Pool = "last", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        self.gpt = gpt
        self.pool: Pool = pool
        self.n_classes = n_classes
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        # Small initial logits: the head starts out (almost) uniform over the classes.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.gpt.config

    def features(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled sequence vectors ``(B, n_embd)`` the head reads."""
        return pool_hidden(self.gpt.hidden_states(idx), mask, self.pool)

    def forward(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` for token ids ``idx`` ``(B, T)``, right-padded per
        ``mask``.
        """
        return self.head(self.dropout(self.features(idx, mask)))

    def forward_with_lm(
        self, idx: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class logits (B, n_classes), next-token logits (B, T, vocab))`` from one pass."""
        h = self.gpt.hidden_states(idx)
        logits = self.head(self.dropout(pool_hidden(h, mask, self.pool)))
        return logits, self.gpt.lm_head(h)

    def score(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` scalar scores; only for ``n_classes == 1`` (e.g. a reward model)."""
        if self.n_classes != 1:
            raise ValueError(
                f"score() needs n_classes == 1, this head has {self.n_classes} outputs"
            )
        return self(idx, mask).squeeze(-1)

    @torch.no_grad()
    def predict(
        self, idx: torch.Tensor, mask: torch.Tensor | None = None, batch_size: int = 256
    ) -> torch.Tensor:
        """Predicted classes ``(B,)``, in eval mode and in chunks of ``batch_size`` rows."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, idx.size(0), batch_size):
            rows = slice(start, start + batch_size)
            chunk_mask = mask[rows].to(device) if mask is not None else None
            out.append(self(idx[rows].to(device), chunk_mask).argmax(-1).cpu())
        self.train(was_training)
        return torch.cat(out)

    @staticmethod
    def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross entropy of class logits ``(B, K)`` against labels ``(B,)``."""
        return F.cross_entropy(logits, labels)
