"""RLHF step 3: proximal policy optimisation (PPO) against a reward model, with a KL leash.

The policy is the SFT model plus a *value head* (a linear layer on the last hidden state that
predicts the return still to come). One PPO step:

1. **roll out**: sample a response to each prompt of a batch (``gptlib.sampling.generate``,
   KV cache on);
2. **score**: the reward model gives one number per (prompt, response), normalised once with
   the statistics of the first batch (Ziegler et al., 2019);
3. **shape the reward**: every response token pays ``-beta * (log pi(y_t) - log pi_ref(y_t))``,
   a per-token estimate of the KL divergence to the frozen reference (SFT) model; the score is
   added at the last token;
4. **advantages**: generalised advantage estimation, GAE(gamma, lambda) (Schulman et al., 2016);
5. **optimise** a few epochs over minibatches: the clipped surrogate loss of Schulman et al.
   (2017), a clipped value loss, optionally PPO-ptx (Ouyang et al., 2022): ``ptx_coef`` times
   the ordinary language-model loss on pre-training text, so the policy does not forget it;
6. **adapt beta**: the adaptive KL controller of Ziegler et al. moves ``beta`` so that the
   measured KL tracks a target.

Everything is written for readability at toy scale (a CPU, a few hundred thousand parameters),
but nothing is toy-specific: the same code runs on a GPU with bigger models.

The objective being maximised is, per prompt ``x`` and sampled response ``y``::

    E[ r(x, y) ] - beta * KL( pi(.|x) || pi_ref(.|x) )  +  ptx_coef * E_pretrain[ log pi(text) ]
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gptlib.model import GPT, lm_loss
from gptlib.sampling import generate
from gptlib.viz import LiveLossPlot

__all__ = [
    "PolicyWithValue",
    "PPOConfig",
    "PPOTrainer",
    "AdaptiveKLController",
    "FixedKLController",
    "compute_gae",
    "gae_reference",
    "whiten",
    "masked_mean",
    "ppo_policy_loss",
    "ppo_value_loss",
    "kl_shaped_rewards",
    "sample_responses",
    "pack_responses",
    "token_logprobs",
    "sample_with_kl",
    "plot_ppo_history",
    "LivePPOPlot",
    "gold_metrics_fn",
    "evaluate_policy",
    "load_aligned_policy",
    "load_runs",
    "RUNS_COMMAND",
    "PPO_SETTINGS",
]


# ----------------------------------------------------------------------------- the policy


class PolicyWithValue(nn.Module):
    """A GPT language model (the policy) plus a value function (the critic).

    ``forward(idx)`` returns ``(logits (B, T, V), values (B, T))``: ``values[b, t]`` estimates the
    return from the state "everything up to and including token t", i.e. it is the value of the
    state in which the token at ``t + 1`` is chosen. ``self.lm`` is the plain GPT, used for sampling.

    Two kinds of critic:

    - ``critic=None``: a small MLP value head on the policy's own last hidden state (trl's
      ``...WithValueHead``), whose output layer starts at zero. ``shared_trunk=False`` (the default)
      stops the value loss's gradient at the policy's body: with a policy of a few hundred thousand
      parameters, regressing noisy returns through the shared body visibly damages the language model.
    - ``critic=reward_model``: a *separate* value network initialised from the reward model, as
      InstructGPT did: a copy of its body, and its scalar head read at every position. It starts out
      knowing which prompts and which answers score well, so the first advantages are already
      measured against a per-prompt baseline, not the batch mean.
    """

    def __init__(self, lm: GPT, shared_trunk: bool = False, critic: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(lm, GPT):
            raise TypeError(f"PolicyWithValue wraps a gptlib GPT, got {type(lm).__name__}.")
        self.lm = lm
        self.config = lm.config
        self.shared_trunk = shared_trunk
        if critic is not None:
            if not (hasattr(critic, "gpt") and hasattr(critic, "head")):
                raise TypeError("critic must be a reward model (a body .gpt and a scalar .head), "
                                f"got {type(critic).__name__}.")
            import copy

            self.critic_body: GPT | None = copy.deepcopy(critic.gpt)
            self.critic_body.requires_grad_(True)
            self.value_head: nn.Module = copy.deepcopy(critic.head)
            self.value_head.requires_grad_(True)
        else:
            self.critic_body = None
            d = lm.config.n_embd
            self.value_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))
            nn.init.zeros_(self.value_head[2].weight)
            nn.init.zeros_(self.value_head[2].bias)

    def value_parameters(self) -> list[nn.Parameter]:
        """The critic's parameters (head, and body when it has its own)."""
        params = list(self.value_head.parameters())
        if self.critic_body is not None:
            params += list(self.critic_body.parameters())
        return params

    @torch.no_grad()
    def rescale_values(self, mean: float, std: float) -> None:
        """Map a reward-model critic onto normalised rewards ``(score - mean) / std`` (an exact
        affine change of its last linear layer). A fresh MLP head (output 0) needs nothing."""
        if self.critic_body is not None:
            self.value_head.weight.div_(std)
            self.value_head.bias.sub_(mean).div_(std)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.lm.hidden_states(idx)
        if self.critic_body is not None:
            hv = self.critic_body.hidden_states(idx)
        else:
            hv = h if self.shared_trunk else h.detach()
        return self.lm.lm_head(h), self.value_head(hv).squeeze(-1)


# ----------------------------------------------------------------------------- small maths


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (all entries when ``mask`` is None)."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (``shift_mean=False`` keeps the mean)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out if mask is None else out * mask.to(x.dtype)


def gae_reference(rewards: Sequence[float], values: Sequence[float], gamma: float, lam: float) -> list[float]:
    """GAE for ONE trajectory, written as the definition (a double loop, for tests and teaching).

    ``A_t = sum_{l >= 0} (gamma * lam)^l * delta_{t+l}`` with ``delta_t = r_t + gamma V_{t+1} - V_t``
    and ``V_T = 0`` after the last step (the episode ends with the response).
    """
    T = len(rewards)
    v = list(values) + [0.0]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(T)]
    return [sum((gamma * lam) ** l * deltas[t + l] for l in range(T - t)) for t in range(T)]


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
    padding. ``lam = 1`` gives Monte-Carlo returns minus the baseline, ``lam = 0`` the one-step TD error.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must have the same shape.")
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

    ``ratio = pi_new / pi_old`` per token; the objective ``min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)``
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
    sequence's score on its last token. Returns ``(rewards, kl)`` with ``kl`` the per-token estimate."""
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

    After each batch: ``e = clip(KL / target - 1, -0.2, 0.2)``; ``beta *= 1 + e * n_steps / horizon``.
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


# ----------------------------------------------------------------------------- rollouts


@torch.no_grad()
def sample_responses(
    lm: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_token: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> list[list[int]]:
    """Sample one response (token ids) per prompt with ``gptlib.sampling.generate`` and its KV cache.

    ``generate`` has no per-row positions, so prompts of different lengths are grouped by length
    and each group is sampled as one batch. A response ends at ``eos_token`` (kept) or after
    ``max_new_tokens`` tokens.
    """
    device = next(lm.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: give the model at least one token to condition on.")
        if len(p) + max_new_tokens > lm.config.block_size:
            raise ValueError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                             f"block_size={lm.config.block_size}. Shorten the prompt or lower max_new_tokens.")
        by_len.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for n, rows in by_len.items():
        idx = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long, device=device)
        seq = generate(lm, idx, max_new_tokens, temperature=temperature, top_k=top_k, greedy=greedy,
                       generator=generator, eos_token=eos_token)
        for r, i in enumerate(rows):
            resp = seq[r, n:].tolist()
            if eos_token is not None and eos_token in resp:
                resp = resp[: resp.index(eos_token) + 1]
            out[i] = resp
    return out


def pack_responses(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``prompt + response`` rows into one batch.

    Returns ``(input_ids (B, L), starts (B,), response_mask (B, R))``: row ``b``'s response starts at
    position ``starts[b]`` and is ``response_mask[b].sum()`` tokens long (R = longest response).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    if any(len(r) == 0 for r in responses):
        raise ValueError("an empty response has no tokens to score; give every response at least one token "
                         "(e.g. the end-of-text token).")
    rows = [list(p) + list(r) for p, r in zip(prompts, responses)]
    L = max(len(r) for r in rows)
    R = max(len(r) for r in responses)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), R)
    for b, (row, resp) in enumerate(zip(rows, responses)):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(resp)] = 1.0
    starts = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), starts.to(device), mask.to(device)


def _gather_response(x: torch.Tensor, starts: torch.Tensor, R: int) -> torch.Tensor:
    """Rows of ``x (B, L, ...)`` at the positions that *predict* response tokens: ``starts - 1 + j``."""
    pos = (starts[:, None] - 1 + torch.arange(R, device=x.device)[None]).clamp(max=x.size(1) - 1)
    if x.dim() == 2:
        return x.gather(1, pos)
    return x.gather(1, pos[..., None].expand(-1, -1, x.size(-1)))


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    starts: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    with_values: bool = False,
    with_entropy: bool = False,
) -> dict[str, torch.Tensor]:
    """Log-probabilities ``(B, R)`` the model gives each response token (0 on padding).

    ``model`` is a GPT (logits) or a :class:`PolicyWithValue` (logits, values). With
    ``with_values`` the values ``(B, R)`` of the states that choose each response token are
    returned too, with ``with_entropy`` the entropy of each of those next-token distributions.
    """
    out = model(input_ids)
    logits, values = out if isinstance(out, tuple) else (out, None)
    R = response_mask.size(1)
    logits_r = _gather_response(logits, starts, R)  # (B, R, V)
    pos = (starts[:, None] + torch.arange(R, device=input_ids.device)[None]).clamp(max=input_ids.size(1) - 1)
    targets = input_ids.gather(1, pos)
    logp_all = F.log_softmax(logits_r.float(), dim=-1)
    result = {"logprobs": logp_all.gather(-1, targets[..., None]).squeeze(-1) * response_mask}
    if with_values:
        if values is None:
            raise ValueError("with_values=True needs a PolicyWithValue (the plain GPT has no value head).")
        result["values"] = _gather_response(values, starts, R) * response_mask
    if with_entropy:
        result["entropy"] = -(logp_all.exp() * logp_all).sum(-1) * response_mask
    return result


@torch.no_grad()
def sample_with_kl(
    lm: GPT,
    ref_model: GPT,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    eos_token: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Sample one response per prompt from ``lm`` and estimate ``KL(lm || ref)`` on each.

    Returns ``(responses, kl)``: the decoded responses (end token included) and, per sample,
    ``sum_t log lm(y_t) - log ref(y_t)`` over its tokens, whose mean over samples is an unbiased
    estimate of the sequence-level KL divergence (in nats). Used to compare policies (PPO, DPO,
    best-of-n) at equal KL.
    """
    ids = [tokenizer.encode(p) for p in prompts]
    responses = sample_responses(lm, ids, max_new_tokens, eos_token=eos_token, temperature=temperature,
                                 generator=generator)
    device = next(lm.parameters()).device
    packed = pack_responses(ids, responses, eos_token if eos_token is not None else 0, device)
    lp = token_logprobs(lm, *packed)["logprobs"]
    lr = token_logprobs(ref_model, *packed)["logprobs"]
    return [tokenizer.decode(r) for r in responses], (lp - lr).sum(1).cpu()


# ----------------------------------------------------------------------------- the trainer


@dataclass
class PPOConfig:
    """Every knob of a PPO run (defaults sized for the book's CPU-scale models).

    ``batch_size`` prompts are rolled out per step; ``ppo_epochs`` passes over them in minibatches
    of ``minibatch_size``. ``target_kl`` is in nats per *response* (the sum over its tokens), the
    unit Ziegler et al. use; ``adaptive_kl=False`` keeps ``init_kl_coef`` fixed.
    """

    batch_size: int = 32
    minibatch_size: int = 16
    ppo_epochs: int = 4
    lr: float = 1e-4
    value_lr: float | None = None  # None: 10 x lr
    max_new_tokens: int = 16
    temperature: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    init_kl_coef: float = 0.1
    adaptive_kl: bool = False
    target_kl: float = 6.0
    kl_horizon: int = 10_000
    normalize_reward: bool = True
    whiten_advantages: bool = True
    ptx_coef: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.minibatch_size > self.batch_size or self.batch_size % self.minibatch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must divide batch_size ({self.batch_size}).")
        for name in ("lr", "clip_range", "max_new_tokens", "ppo_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)}.")
        if self.init_kl_coef < 0 or self.ptx_coef < 0:
            raise ValueError("init_kl_coef and ptx_coef must be >= 0.")


RewardFn = Callable[[list[str], list[str]], Any]


class PPOTrainer:
    """PPO for a language model: ``trainer.train(steps)`` runs rollout -> score -> GAE -> update.

    Args:
        policy: a :class:`PolicyWithValue` (trained in place).
        ref_model: the frozen reference GPT (usually a copy of the SFT model) for the KL penalty.
        tokenizer: encodes prompts and decodes responses for ``reward_fn``.
        prompts: the prompt strings to sample batches from.
        reward_fn: ``reward_fn(prompts, responses) -> (B,)`` scores (the reward model, or any
            programmatic reward); responses are decoded with their end token, if they have one.
        config: a :class:`PPOConfig`.
        eos_token: the token id that ends a response (kept in the sampled tokens).
        ptx_batch: ``ptx_batch() -> (x, y)`` a pre-training LM batch, needed when ``ptx_coef > 0``.
        metrics_fn: ``metrics_fn(prompts, responses) -> dict`` of extra numbers logged each step
            on the very same samples (e.g. the gold reward that the policy never sees).
    ``history`` holds one dict per step: reward (raw proxy score), kl (nats per response),
    kl_coef, entropy, clipfrac, losses, response length and whatever ``metrics_fn`` returns.
    """

    def __init__(
        self,
        policy: PolicyWithValue,
        ref_model: GPT,
        tokenizer,
        prompts: Sequence[str],
        reward_fn: RewardFn,
        config: PPOConfig | None = None,
        *,
        eos_token: int | None = None,
        ptx_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
        metrics_fn: Callable[[list[str], list[str]], dict] | None = None,
    ) -> None:
        if not isinstance(policy, PolicyWithValue):
            raise TypeError("policy must be a PolicyWithValue: wrap your GPT with PolicyWithValue(gpt).")
        if not prompts:
            raise ValueError("PPOTrainer needs at least one prompt.")
        self.config = config = config or PPOConfig()
        if config.ptx_coef > 0 and ptx_batch is None:
            raise ValueError("ptx_coef > 0 needs ptx_batch=callable returning a pre-training (x, y) batch.")
        self.policy, self.ref, self.tokenizer = policy, ref_model, tokenizer
        self.prompts = list(prompts)
        self.prompt_ids = [tokenizer.encode(p) for p in self.prompts]
        self.reward_fn, self.metrics_fn, self.ptx_batch = reward_fn, metrics_fn, ptx_batch
        self.eos_token = eos_token
        if policy.lm is ref_model:
            raise ValueError("the reference model must be a separate frozen copy: "
                             "PolicyWithValue(copy.deepcopy(sft)) as policy, sft as ref_model.")
        self.device = next(policy.parameters()).device
        self.ref.requires_grad_(False)
        self.ref.eval()
        policy.requires_grad_(True)  # a deepcopy of a frozen reference would otherwise never learn
        # The critic learns fast while the policy must move slowly: its own, larger step.
        value_params = policy.value_parameters()
        ids = {id(p) for p in value_params}
        self.optimizer = torch.optim.Adam(
            [{"params": [p for p in policy.parameters() if id(p) not in ids], "lr": config.lr},
             {"params": value_params, "lr": config.value_lr if config.value_lr is not None else 10 * config.lr}],
            eps=1e-5)
        self.kl_ctl = (AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
                       if config.adaptive_kl else FixedKLController(config.init_kl_coef))
        self.generator = torch.Generator().manual_seed(config.seed)  # CPU: reproducible everywhere
        self.reward_mean: float | None = None
        self.reward_std: float | None = None
        self.history: list[dict] = []
        self.step_num = 0

    # --- pieces -------------------------------------------------------------------------

    def decode(self, ids: Sequence[int]) -> str:
        """The response text *with* its end token (a reward model trained on answers that end
        with a newline should see that newline; one cut off by ``max_new_tokens`` has none)."""
        return self.tokenizer.decode(list(ids))

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        with torch.no_grad():
            scores = self.reward_fn(prompts, responses)
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1).to(self.device)
        if scores.numel() != len(prompts):
            raise ValueError(f"reward_fn returned {scores.numel()} scores for {len(prompts)} responses.")
        return scores

    @torch.no_grad()
    def rollout(self) -> dict[str, Any]:
        """Sample a batch, score it and compute everything the update needs (no gradients)."""
        cfg = self.config
        pick = torch.randint(len(self.prompts), (cfg.batch_size,), generator=self.generator).tolist()
        prompt_ids = [self.prompt_ids[i] for i in pick]
        responses = sample_responses(self.policy.lm, prompt_ids, cfg.max_new_tokens, eos_token=self.eos_token,
                                     temperature=cfg.temperature, generator=self.generator)
        prompts = [self.prompts[i] for i in pick]
        texts = [self.decode(r) for r in responses]
        raw = self.score(prompts, texts)
        if cfg.normalize_reward:
            if self.reward_mean is None:  # fixed gain and bias from the first batch (Ziegler et al.)
                self.reward_mean = raw.mean().item()
                self.reward_std = raw.std().item() + 1e-6 if raw.numel() > 1 else 1.0
                self.policy.rescale_values(self.reward_mean, self.reward_std)
            scores = (raw - self.reward_mean) / self.reward_std
        else:
            scores = raw
        pad = self.eos_token if self.eos_token is not None else 0
        ids, starts, mask = pack_responses(prompt_ids, responses, pad, self.device)
        self.policy.eval()
        pol = token_logprobs(self.policy, ids, starts, mask, with_values=True, with_entropy=True)
        ref = token_logprobs(self.ref, ids, starts, mask)
        rewards, kl = kl_shaped_rewards(scores, pol["logprobs"], ref["logprobs"], mask, self.kl_ctl.value)
        adv, returns = compute_gae(rewards, pol["values"], mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = whiten(adv, mask)
        batch = dict(ids=ids, starts=starts, mask=mask, logprobs=pol["logprobs"], values=pol["values"],
                     advantages=adv, returns=returns)
        stats = {
            "reward": raw.mean().item(),
            "kl": kl.sum(1).mean().item(),
            "entropy": masked_mean(pol["entropy"], mask).item(),
            "response_len": mask.sum(1).mean().item(),
        }
        if self.metrics_fn is not None:
            stats.update({k: float(v) for k, v in self.metrics_fn(prompts, texts).items()})
        return {"batch": batch, "stats": stats, "prompts": prompts, "responses": texts}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped-loss minibatch updates over one rollout batch."""
        cfg = self.config
        B = batch["ids"].size(0)
        logs: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [],
                                        "ptx_loss": []}
        self.policy.eval()  # no dropout: the ratio must be exactly 1 before the first update
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=self.generator).to(self.device)
            for s in range(0, B, cfg.minibatch_size):
                mb = order[s: s + cfg.minibatch_size]
                ids, starts, mask = batch["ids"][mb], batch["starts"][mb], batch["mask"][mb]
                # Crop the padding columns this minibatch does not need.
                L = int((starts + mask.sum(1).long()).max())
                R = int(mask.sum(1).max())
                ids, mask = ids[:, :L], mask[:, :R]
                new = token_logprobs(self.policy, ids, starts, mask, with_values=True, with_entropy=cfg.ent_coef > 0)
                pg_loss, clipfrac = ppo_policy_loss(new["logprobs"], batch["logprobs"][mb][:, :R],
                                                    batch["advantages"][mb][:, :R], mask, cfg.clip_range)
                vf_loss, _ = ppo_value_loss(new["values"], batch["values"][mb][:, :R], batch["returns"][mb][:, :R],
                                            mask, cfg.clip_range_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                if cfg.ent_coef > 0:
                    loss = loss - cfg.ent_coef * masked_mean(new["entropy"], mask)
                if cfg.ptx_coef > 0:
                    x, y = self.ptx_batch()
                    ptx = lm_loss(self.policy.lm(x.to(self.device)), y.to(self.device))
                    loss = loss + cfg.ptx_coef * ptx
                    logs["ptx_loss"].append(ptx.item())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = 0.5 * masked_mean((new["logprobs"] - batch["logprobs"][mb][:, :R]) ** 2, mask)
                logs["policy_loss"].append(pg_loss.item())
                logs["value_loss"].append(vf_loss.item())
                logs["clipfrac"].append(clipfrac.item())
                logs["approx_kl"].append(approx_kl.item())
        return {k: sum(v) / len(v) for k, v in logs.items() if v}

    def step(self) -> dict:
        """One PPO iteration; returns (and appends to ``history``) its log entry."""
        t0 = time.perf_counter()
        ro = self.rollout()
        entry = {"step": self.step_num, "kl_coef": self.kl_ctl.value, **ro["stats"]}
        entry.update(self.update(ro["batch"]))
        self.kl_ctl.update(ro["stats"]["kl"], self.config.batch_size)
        entry["seconds"] = time.perf_counter() - t0
        self.history.append(entry)
        self.step_num += 1
        return entry

    def train(self, steps: int, *, progress: bool = True, callback: Callable[[dict], None] | None = None) -> list[dict]:
        """Run ``steps`` PPO iterations with a tqdm bar showing reward, KL, entropy and clip fraction."""
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc="ppo", unit="step", dynamic_ncols=True)
        try:
            for _ in range(steps):
                entry = self.step()
                if callback is not None:
                    callback(entry)
                if bar is not None:
                    bar.set_postfix(reward=f"{entry['reward']:.3f}", kl=f"{entry['kl']:.2f}",
                                    ent=f"{entry['entropy']:.2f}", clip=f"{entry['clipfrac']:.2f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def config_dict(self) -> dict:
        return asdict(self.config)


# ----------------------------------------------------------------------------- plots


def plot_ppo_history(history: Sequence[dict], keys: Sequence[str] = ("reward", "kl", "entropy", "clipfrac"),
                     title: str = "PPO"):
    """One small panel per logged quantity against the PPO step."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.0 * max(1, len(keys)), 2.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(h["step"], h[k]) for h in history if k in h]
        if pts:
            ax.plot(*zip(*pts), lw=1.2)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class LivePPOPlot(LiveLossPlot):
    """A ``PPOTrainer.train(callback=...)`` callback that redraws :func:`plot_ppo_history` live in
    JupyterLab every ``every`` steps (``gptlib.viz.LiveLossPlot``, with PPO's curves instead of
    losses); elsewhere ``show()`` draws once at the end."""

    def __init__(self, every: int = 5, keys: Sequence[str] = ("reward", "kl", "entropy", "clipfrac"),
                 title: str = "PPO") -> None:
        super().__init__(every=every, title=title)
        self.keys = tuple(keys)

    def figure(self):
        return plot_ppo_history(self.history, self.keys, self.title)


# ----------------------------------------------------------------------------- the book's runs
#
# ``python -m gptlib.rlhf.ppo`` makes assets/rlhf_ppo/: the longer runs whose curves chapter 13
# draws (history.json) and the PPO and DPO policies chapter 14 evaluates. It needs the
# checkpoints of chapters 11-12 (assets/rlhf/{sft,reward}, made by scripts/make_rlhf_assets.py).

RUNS_COMMAND = "OMP_NUM_THREADS=1 python -m gptlib.rlhf.ppo"


def aligned_policy_path(name: str):
    """Folder of a shipped aligned policy: ``assets/rlhf_ppo/<name>`` for ``name`` in ``ppo``, ``dpo``."""
    from gptlib.paths import ASSETS

    if name not in ("ppo", "dpo"):
        raise ValueError(f"aligned policy name must be 'ppo' or 'dpo', got {name!r}")
    return ASSETS / "rlhf_ppo" / name


def load_aligned_policy(name: str, device: str | torch.device | None = None) -> GPT:
    """The PPO or DPO policy made by ``python -m gptlib.rlhf.ppo`` (a GPT in eval mode)."""
    from gptlib.checkpoint import load_model

    path = aligned_policy_path(name) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; make it with `{RUNS_COMMAND}` (about 20 minutes on 4 CPU cores).")
    return load_model(path, device=device)


def load_runs() -> dict:
    """The precomputed runs of chapter 13 (``assets/rlhf_ppo/history.json``)."""
    import json

    from gptlib.paths import ASSETS

    path = ASSETS / "rlhf_ppo" / "history.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; make it with `{RUNS_COMMAND}`.")
    return json.loads(path.read_text())


def gold_metrics_fn(world, prompt_of: dict) -> Callable[[list[str], list[str]], dict]:
    """``metrics_fn`` for :class:`PPOTrainer`: the mean gold reward of the samples (never trained on)."""
    def fn(prompts: list[str], responses: list[str]) -> dict:
        gold = [world.gold_reward(prompt_of[p], r) for p, r in zip(prompts, responses)]
        return {"gold": sum(gold) / len(gold)}
    return fn


def evaluate_policy(lm: GPT, ref: GPT, tokenizer, world, prompts: Sequence, reward_fn: RewardFn,
                    *, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """Sample once per test prompt (temperature 1): mean proxy reward, gold reward and KL to ``ref``."""
    texts = [p.formatted for p in prompts]
    eos = tokenizer.encode("\n")[0]
    gen = torch.Generator().manual_seed(seed)
    responses, kl = sample_with_kl(lm, ref, tokenizer, texts, max_new_tokens, eos_token=eos, generator=gen)
    proxy = torch.as_tensor(reward_fn(texts, responses)).float()
    gold = [world.gold_reward(p, r) for p, r in zip(prompts, responses)]
    return {"proxy": proxy.mean().item(), "gold": sum(gold) / len(gold), "kl": kl.mean().item(),
            "samples": [[p.text, r] for p, r in list(zip(prompts, responses))[:6]]}


class _Setup:
    """Everything one run of :func:`main` needs (loaded once per worker process)."""

    def __init__(self, n_eval: int) -> None:
        from gptlib.rlhf.reward import load_reward_model, make_reward_fn
        from gptlib.rlhf.sft import load_policy
        from gptlib.rlhf.world import ToyWorld

        torch.set_num_threads(1)
        self.world = ToyWorld(0)
        self.sft, self.tok = load_policy("sft")
        self.rm, _ = load_reward_model()
        self.reward_fn = make_reward_fn(self.rm, self.tok)
        self.eos = self.tok.encode("\n")[0]
        self.prompt_of = {p.formatted: p for p in self.world.prompts("train", 3000, seed=1)}
        self.test_prompts = self.world.prompts("test", n_eval, seed=0)
        self.pre = torch.tensor(self.tok.encode(self.world.pretraining_text(200_000, seed=5)), dtype=torch.long)
        self.pre_val = torch.tensor(self.tok.encode(self.world.pretraining_text(40_000, seed=6)), dtype=torch.long)
        self.ptx_gen = torch.Generator().manual_seed(0)

    def ptx_batch(self, n: int = 16, T: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.pre) - T - 1, (n,), generator=self.ptx_gen)
        return (torch.stack([self.pre[s:s + T] for s in starts]),
                torch.stack([self.pre[s + 1:s + T + 1] for s in starts]))

    @torch.no_grad()
    def pretrain_loss(self, lm: GPT, n: int = 40, T: int = 128) -> float:
        g = torch.Generator().manual_seed(1)
        starts = torch.randint(len(self.pre_val) - T - 1, (n,), generator=g)
        x = torch.stack([self.pre_val[s:s + T] for s in starts])
        y = torch.stack([self.pre_val[s + 1:s + T + 1] for s in starts])
        return lm_loss(lm(x), y).item()

    def evaluate(self, lm: GPT) -> dict:
        final = evaluate_policy(lm, self.sft, self.tok, self.world, self.test_prompts, self.reward_fn)
        final["pretrain_loss"] = self.pretrain_loss(lm)
        return final


_SETUP: _Setup | None = None
PPO_SETTINGS = dict(batch_size=32, minibatch_size=16, ppo_epochs=4, lr=5e-5, value_lr=1e-4, vf_coef=0.5,
                    max_new_tokens=48, seed=0)


def _init_worker(n_eval: int) -> None:
    global _SETUP
    _SETUP = _Setup(n_eval)


def _run_task(task: tuple) -> dict:
    """One run of :func:`main`: ("ppo", name, steps, overrides) or ("dpo", name, steps, beta)."""
    import copy

    from gptlib.rlhf.dpo import train_dpo
    from gptlib.rlhf.reward import make_comparisons

    S = _SETUP
    kind, name, steps, arg = task
    t0 = time.time()
    if kind == "ppo":
        policy = PolicyWithValue(copy.deepcopy(S.sft), critic=S.rm)  # value function from the RM
        cfg = PPOConfig(**{**PPO_SETTINGS, **arg})
        trainer = PPOTrainer(policy, S.sft, S.tok, list(S.prompt_of), S.reward_fn, cfg, eos_token=S.eos,
                             ptx_batch=S.ptx_batch if cfg.ptx_coef > 0 else None,
                             metrics_fn=gold_metrics_fn(S.world, S.prompt_of))
        trainer.train(steps, progress=False)
        lm = policy.lm
        keep = ("step", "reward", "gold", "kl", "kl_coef", "entropy", "clipfrac", "response_len", "ptx_loss")
        history = [{k: round(h[k], 5) for k in keep if k in h} for h in trainer.history]
        result = {"config": arg}
    else:
        comps = make_comparisons(S.world, "train", 2000, 4, seed=0)
        pairs = [(c.prompt.formatted, c.responses[w], c.responses[lo]) for c in comps for w, lo in c.pairs]
        lm = copy.deepcopy(S.sft)
        hist = train_dpo(lm, S.sft, S.tok, pairs, beta=arg, steps=steps, batch_size=32, lr=5e-5, progress=False)
        history = [{k: round(v, 5) for k, v in h.items()} for h in hist]
        result = {"beta": arg}
    result.update(final=S.evaluate(lm), history=history, seconds=round(time.time() - t0, 1))
    result["state"] = {k: v.clone() for k, v in lm.state_dict().items()}
    print(name, f"{result['seconds']:.0f}s", {k: v for k, v in result["final"].items() if k != "samples"},
          flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Run the PPO sweep over beta, the adaptive-KL and PPO-ptx runs and the DPO runs, in
    ``--workers`` processes; write assets/rlhf_ppo/ (history.json and the ppo and dpo policies)."""
    import argparse
    import copy
    import json
    import multiprocessing as mp
    import sys
    from pathlib import Path

    from gptlib.checkpoint import save_model
    from gptlib.paths import ASSETS

    ap = argparse.ArgumentParser(description="Chapter 13's PPO and DPO runs (writes assets/rlhf_ppo/).")
    ap.add_argument("--out", default=str(ASSETS / "rlhf_ppo"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--betas", default="0.1,0.01,0.0")
    ap.add_argument("--dpo-betas", default="0.1,0.5")
    ap.add_argument("--dpo-steps", type=int, default=80)
    ap.add_argument("--eval-prompts", type=int, default=100)
    ap.add_argument("--target-kl", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="a few steps of everything (to test the script)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    steps = 3 if args.quick else args.steps
    dpo_steps = 3 if args.quick else args.dpo_steps
    n_eval = 20 if args.quick else args.eval_prompts
    adaptive = dict(init_kl_coef=0.05, adaptive_kl=True, target_kl=args.target_kl, kl_horizon=2000)
    tasks = [("ppo", f"ppo_beta{b:g}", steps, {"init_kl_coef": b}) for b in map(float, args.betas.split(","))]
    tasks += [("ppo", "ppo_adaptive", steps, adaptive), ("ppo", "ppo_adaptive_ptx", steps, {**adaptive, "ptx_coef": 1.0})]
    tasks += [("dpo", f"dpo_beta{b:g}", dpo_steps, b) for b in map(float, args.dpo_betas.split(","))]
    if args.workers > 1:
        with mp.get_context("fork").Pool(args.workers, initializer=_init_worker, initargs=(n_eval,)) as pool:
            results = pool.map(_run_task, tasks, chunksize=1)
    else:
        _init_worker(n_eval)
        results = [_run_task(t) for t in tasks]
    if _SETUP is None:
        _init_worker(n_eval)
    S = _SETUP
    shown = [a for a in (sys.argv[1:] if argv is None else argv)]
    if "--out" in shown:  # where the files go is not part of the recipe
        i = shown.index("--out")
        del shown[i:i + 2]
    out: dict[str, Any] = {"command": " ".join([RUNS_COMMAND, *shown]),
                           "steps": steps, "dpo_steps": dpo_steps, "ppo_config": PPO_SETTINGS,
                           "sft": S.evaluate(S.sft), "runs": {}, "dpo": {}}
    states = {}
    for (kind, name, _, _), res in zip(tasks, results):
        states[name] = res.pop("state")
        out["runs" if kind == "ppo" else "dpo"][name] = res
    # Chapter 14 evaluates the adaptive-KL PPO policy and the DPO policy with the best gold reward.
    best_dpo = max(out["dpo"], key=lambda n: out["dpo"][n]["final"]["gold"])
    out["shipped"] = {"ppo": "ppo_adaptive", "dpo": best_dpo}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, run in out["shipped"].items():
        lm = copy.deepcopy(S.sft)
        lm.load_state_dict(states[run])
        (folder / name).mkdir(exist_ok=True)
        save_model(folder / name / "model.safetensors", lm)
        S.tok.save(folder / name / "tokenizer.json")
    out["seconds"] = round(time.time() - t_start, 1)
    (folder / "history.json").write_text(json.dumps(out) + "\n")
    print(f"wrote {folder} in {out['seconds']:.0f}s")


if __name__ == "__main__":
    main()
