"""The arithmetic of PPO for language models: advantages, clipped losses, KL shaping, KL control.

Pure tensor functions (no model, no sampling), each small enough to check by hand:

- :func:`compute_gae` (and :func:`gae_reference`, the definition as a double loop):
  generalised advantage estimation (Schulman et al., 2016);
- :func:`ppo_policy_loss` and :func:`ppo_value_loss`: the clipped surrogate and the clipped
  value loss of PPO (Schulman et al., 2017);
- :func:`kl_shaped_rewards`: the per-token reward ``-beta * (log pi - log pi_ref)`` plus the
  reward model's score on the last token (Ziegler et al., 2019; Ouyang et al., 2022);
- :class:`FixedKLController` and :class:`AdaptiveKLController`: how ``beta`` moves;
- :func:`whiten` and :func:`masked_mean`: statistics over the real (unpadded) tokens.

:mod:`gptlib.rlhf.ppo` puts them together into a trainer.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "masked_mean",
    "whiten",
    "gae_reference",
    "compute_gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "kl_shaped_rewards",
    "FixedKLController",
    "AdaptiveKLController",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (all entries when ``mask`` is None)."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (``shift_mean=False`` keeps the mean)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out if mask is None else out * mask.to(x.dtype)


def gae_reference(
    rewards: Sequence[float], values: Sequence[float], gamma: float, lam: float
) -> list[float]:
    """GAE for ONE trajectory, written as the definition (a double loop, for tests and teaching).

    ``A_t = sum_{k >= 0} (gamma * lam)^k * delta_{t+k}`` with
    ``delta_t = r_t + gamma V_{t+1} - V_t``
    and ``V_T = 0`` after the last step (the episode ends with the response).
    """
    T = len(rewards)
    v = list(values) + [0.0]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(T)]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t)) for t in range(T)]


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016), backwards in one pass.

    ``rewards`` and ``values`` are ``(B, T)`` (or ``(T,)``) per response token; ``mask`` marks the
    real tokens (a prefix of ones per row: responses are left-aligned). After the last real token
    the episode is over, so its next value is 0. Returns ``(advantages, returns)`` with
    ``returns = advantages + values`` (the regression target of the value head); both are 0 on
    padding. ``lam = 1`` gives Monte-Carlo returns minus the baseline, ``lam = 0`` the one-step
    TD error.
    """
    if rewards.shape != values.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must have the same "
            "shape."
        )
    squeeze = rewards.dim() == 1
    if squeeze:
        rewards, values = rewards[None], values[None]
        mask = None if mask is None else mask[None]
    mask = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    values = values * mask
    T = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]  # resets to 0 on padding
        advantages[:, t] = last
    returns = (advantages + values) * mask
    if squeeze:
        return advantages[0], returns[0]
    return advantages, returns


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate of PPO (Schulman et al., 2017), as a loss to *minimise*.

    ``ratio = pi_new / pi_old`` per token; the objective
    ``min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)``
    stops rewarding a token once its probability has moved more than ``eps`` in the helpful
    direction. Returns ``(loss, clip_fraction)``: the share of tokens where the clip was active.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: ``0.5 * max((V - R)^2, (V_clipped - R)^2)`` with
    ``V_clipped = V_old + clip(V - V_old, -eps, eps)``. Returns ``(loss, value_clip_fraction)``."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    return loss, masked_mean((err_clipped > err).float(), mask)


def kl_shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: ``-kl_coef * (log pi - log pi_ref)`` on every response token, plus the
    sequence's score on its last token. Returns ``(rewards, kl)`` with ``kl`` the per-token
    estimate."""
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores), device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


# ----------------------------------------------------------------------------- KL controllers


class FixedKLController:
    """A constant KL coefficient ``beta``."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:  # noqa: ARG002 - same interface
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019)'s proportional controller for the KL coefficient ``beta``.

    After each batch: ``e = clip(KL / target - 1, -0.2, 0.2)``;
    ``beta *= 1 + e * n_steps / horizon``.
    KL above the target raises ``beta`` (a tighter leash), below it lowers ``beta``.
    ``n_steps`` is the number of samples in the batch, ``horizon`` how many samples it takes to
    correct a 20% error by a factor ``e``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target ({target}) and horizon ({horizon}) must be > 0.")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
