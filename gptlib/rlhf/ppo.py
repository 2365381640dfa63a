"""RLHF step 3: proximal policy optimisation (PPO) against a reward model, with a KL leash.

The policy is the SFT model plus a *critic* that predicts the return still to come (in the
book, a separate value model initialised from the reward model, as in InstructGPT). One PPO
step:

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

The arithmetic (GAE, clipped losses, KL shaping and control) is in
:mod:`gptlib.rlhf.ppo_math`, sampling and scoring in :mod:`gptlib.rlhf.rollout`; this module
is the policy with its critic and the trainer that runs the loop.

Everything is written for readability at toy scale (a CPU, a few hundred thousand parameters),
but nothing is toy-specific: the same code runs on a GPU with bigger models.

The objective being maximised is, per prompt ``x`` and sampled response ``y``::

    E[ r(x, y) ] - beta * KL( pi(.|x) || pi_ref(.|x) )  +  ptx_coef * E_pretrain[ log pi(text) ]
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from gptlib.evaluate import continuation_logprobs
from gptlib.model import GPT, lm_loss
from gptlib.rlhf.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    kl_shaped_rewards,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from gptlib.rlhf.rollout import RewardFn, pack_responses, response_token_stats, sample_responses
from gptlib.viz import LiveLossPlot

__all__ = ["PolicyWithValue", "PPOConfig", "PPOTrainer", "plot_ppo_history", "LivePPOPlot"]


# ----------------------------------------------------------------------------- the policy


class PolicyWithValue(nn.Module):
    """A GPT language model (the policy) plus a value function (the critic).

    ``forward(idx)`` returns ``(logits (B, T, V), values (B, T))``: ``values[b, t]`` estimates the
    return from the state "everything up to and including token t", i.e. it is the value of the
    state in which the token at ``t + 1`` is chosen. ``self.lm`` is the plain GPT, used for
    sampling.

    Two kinds of critic:

    - ``critic=None``: a small MLP value head on the policy's own last hidden state (trl's
      ``...WithValueHead``), whose output layer starts at zero. ``shared_trunk=False`` (the default)
      stops the value loss's gradient at the policy's body: with a policy of a few hundred thousand
      parameters, regressing noisy returns through the shared body visibly damages the language
      model.
    - ``critic=reward_model``: a *separate* value network initialised from the reward model, as
      InstructGPT did: a copy of its body, and its scalar head read at every position. It starts out
      knowing which prompts and which answers score well, so the first advantages are already
      measured against a per-prompt baseline, not the batch mean.
    """

    def __init__(
        self, lm: GPT, shared_trunk: bool = False, critic: nn.Module | None = None
    ) -> None:
        super().__init__()
        if not isinstance(lm, GPT):
            raise TypeError(f"PolicyWithValue wraps a gptlib GPT, got {type(lm).__name__}.")
        self.lm = lm
        self.config = lm.config
        self.shared_trunk = shared_trunk
        if critic is not None:
            if not (hasattr(critic, "gpt") and hasattr(critic, "head")):
                raise TypeError(
                    "critic must be a reward model (a body .gpt and a scalar .head), "
                    f"got {type(critic).__name__}."
                )
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
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) must divide batch_size "
                f"({self.batch_size})."
            )
        for name in ("lr", "clip_range", "max_new_tokens", "ppo_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)}.")
        if self.init_kl_coef < 0 or self.ptx_coef < 0:
            raise ValueError("init_kl_coef and ptx_coef must be >= 0.")


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
            raise TypeError(
                "policy must be a PolicyWithValue: wrap your GPT with PolicyWithValue(gpt)."
            )
        if not prompts:
            raise ValueError("PPOTrainer needs at least one prompt.")
        self.config = config = config or PPOConfig()
        if config.ptx_coef > 0 and ptx_batch is None:
            raise ValueError(
                "ptx_coef > 0 needs ptx_batch=callable returning a pre-training (x, y) batch."
            )
        self.policy, self.ref, self.tokenizer = policy, ref_model, tokenizer
        self.prompts = list(prompts)
        self.prompt_ids = [tokenizer.encode(p) for p in self.prompts]
        self.reward_fn, self.metrics_fn, self.ptx_batch = reward_fn, metrics_fn, ptx_batch
        self.eos_token = eos_token
        if policy.lm is ref_model:
            raise ValueError(
                "the reference model must be a separate frozen copy: "
                "PolicyWithValue(copy.deepcopy(sft)) as policy, sft as ref_model."
            )
        self.device = next(policy.parameters()).device
        self.ref.requires_grad_(False)
        self.ref.eval()
        policy.requires_grad_(True)  # a deepcopy of a frozen reference would otherwise never learn
        # The critic learns fast while the policy must move slowly: its own, larger step.
        value_params = policy.value_parameters()
        ids = {id(p) for p in value_params}
        self.optimizer = torch.optim.Adam(
            [
                {"params": [p for p in policy.parameters() if id(p) not in ids], "lr": config.lr},
                {
                    "params": value_params,
                    "lr": config.value_lr if config.value_lr is not None else 10 * config.lr,
                },
            ],
            eps=1e-5,
        )
        self.kl_ctl = (
            AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.init_kl_coef)
        )
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
            raise ValueError(
                f"reward_fn returned {scores.numel()} scores for {len(prompts)} responses."
            )
        return scores

    @torch.no_grad()
    def rollout(self) -> dict[str, Any]:
        """Sample a batch, score it and compute everything the update needs (no gradients)."""
        cfg = self.config
        pick = torch.randint(
            len(self.prompts), (cfg.batch_size,), generator=self.generator
        ).tolist()
        prompt_ids = [self.prompt_ids[i] for i in pick]
        responses = sample_responses(
            self.policy.lm,
            prompt_ids,
            cfg.max_new_tokens,
            eos_token=self.eos_token,
            temperature=cfg.temperature,
            generator=self.generator,
        )
        prompts = [self.prompts[i] for i in pick]
        texts = [self.decode(r) for r in responses]
        raw = self.score(prompts, texts)
        if cfg.normalize_reward:
            if (
                self.reward_mean is None
            ):  # fixed gain and bias from the first batch (Ziegler et al.)
                self.reward_mean = raw.mean().item()
                self.reward_std = raw.std().item() + 1e-6 if raw.numel() > 1 else 1.0
                self.policy.rescale_values(self.reward_mean, self.reward_std)
            scores = (raw - self.reward_mean) / self.reward_std
        else:
            scores = raw
        pad = self.eos_token if self.eos_token is not None else 0
        ids, starts, mask = pack_responses(prompt_ids, responses, pad, self.device)
        self.policy.eval()
        pol = response_token_stats(
            self.policy, ids, starts, mask, with_values=True, with_entropy=True
        )
        ref_logprobs = continuation_logprobs(self.ref, prompt_ids, responses, reduce="none")
        ref_logprobs = ref_logprobs.to(self.device) * mask
        rewards, kl = kl_shaped_rewards(
            scores, pol["logprobs"], ref_logprobs, mask, self.kl_ctl.value
        )
        adv, returns = compute_gae(rewards, pol["values"], mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = whiten(adv, mask)
        batch = dict(
            ids=ids,
            starts=starts,
            mask=mask,
            logprobs=pol["logprobs"],
            values=pol["values"],
            advantages=adv,
            returns=returns,
        )
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
        logs: dict[str, list[float]] = {
            "policy_loss": [],
            "value_loss": [],
            "clipfrac": [],
            "approx_kl": [],
            "ptx_loss": [],
        }
        self.policy.eval()  # no dropout: the ratio must be exactly 1 before the first update
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=self.generator).to(self.device)
            for s in range(0, B, cfg.minibatch_size):
                mb = order[s : s + cfg.minibatch_size]
                ids, starts, mask = batch["ids"][mb], batch["starts"][mb], batch["mask"][mb]
                # Crop the padding columns this minibatch does not need.
                L = int((starts + mask.sum(1).long()).max())
                R = int(mask.sum(1).max())
                ids, mask = ids[:, :L], mask[:, :R]
                new = response_token_stats(
                    self.policy, ids, starts, mask, with_values=True, with_entropy=cfg.ent_coef > 0
                )
                pg_loss, clipfrac = ppo_policy_loss(
                    new["logprobs"],
                    batch["logprobs"][mb][:, :R],
                    batch["advantages"][mb][:, :R],
                    mask,
                    cfg.clip_range,
                )
                vf_loss, _ = ppo_value_loss(
                    new["values"],
                    batch["values"][mb][:, :R],
                    batch["returns"][mb][:, :R],
                    mask,
                    cfg.clip_range_value,
                )
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
                    approx_kl = 0.5 * masked_mean(
                        (new["logprobs"] - batch["logprobs"][mb][:, :R]) ** 2, mask
                    )
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

    def train(
        self, steps: int, *, progress: bool = True, callback: Callable[[dict], None] | None = None
    ) -> list[dict]:
        """Run ``steps`` PPO iterations with a tqdm bar showing reward, KL, entropy and clip
        fraction."""
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
                    bar.set_postfix(
                        reward=f"{entry['reward']:.3f}",
                        kl=f"{entry['kl']:.2f}",
                        ent=f"{entry['entropy']:.2f}",
                        clip=f"{entry['clipfrac']:.2f}",
                    )
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def config_dict(self) -> dict:
        return asdict(self.config)


# ----------------------------------------------------------------------------- plots


def plot_ppo_history(
    history: Sequence[dict],
    keys: Sequence[str] = ("reward", "kl", "entropy", "clipfrac"),
    title: str = "PPO",
):
    """One small panel per logged quantity against the PPO step."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(
        1, max(1, len(keys)), figsize=(3.0 * max(1, len(keys)), 2.6), squeeze=False
    )
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

    def __init__(
        self,
        every: int = 5,
        keys: Sequence[str] = ("reward", "kl", "entropy", "clipfrac"),
        title: str = "PPO",
    ) -> None:
        super().__init__(every=every, title=title)
        self.keys = tuple(keys)

    def figure(self):
        return plot_ppo_history(self.history, self.keys, self.title)
