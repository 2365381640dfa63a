"""Rollouts: sample responses from a policy, pack them into a batch, score their tokens.

- :func:`sample_responses`: one response (token ids) per prompt, with the KV cache;
- :func:`pack_responses`: ``prompt + response`` rows right-padded into one batch;
- :func:`response_token_stats`: per response token, the log-probability (through
  :func:`gptlib.evaluate.token_logprobs`), and optionally the critic's value and the entropy,
  all from one forward pass (what the PPO update needs);
- :func:`sample_with_kl`: sample and estimate ``KL(policy || reference)`` per sample, with
  :func:`gptlib.evaluate.continuation_logprobs`;
- :func:`evaluate_policy` and :func:`gold_metrics_fn`: proxy reward, gold reward and KL of a
  policy on held-out prompts.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from gptlib.evaluate import continuation_logprobs, token_logprobs
from gptlib.model import GPT
from gptlib.sampling import generate

__all__ = [
    "sample_responses",
    "pack_responses",
    "response_token_stats",
    "sample_with_kl",
    "evaluate_policy",
    "gold_metrics_fn",
    "RewardFn",
]

RewardFn = Callable[[list[str], list[str]], Any]


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
    """Sample one response (token ids) per prompt with ``gptlib.sampling.generate`` (KV cache).

    ``generate`` has no per-row positions, so prompts of different lengths are grouped by length
    and each group is sampled as one batch. A response ends at ``eos_token`` (kept) or after
    ``max_new_tokens`` tokens.
    """
    device = next(lm.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(
                f"prompt {i} is empty: give the model at least one token to condition on."
            )
        if len(p) + max_new_tokens > lm.config.block_size:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                f"block_size={lm.config.block_size}. Shorten the prompt or lower max_new_tokens."
            )
        by_len.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for n, rows in by_len.items():
        idx = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long, device=device)
        seq = generate(
            lm,
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            greedy=greedy,
            generator=generator,
            eos_token=eos_token,
        )
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

    Returns ``(input_ids (B, L), starts (B,), response_mask (B, R))``: row ``b``'s response
    starts at position ``starts[b]`` and is ``response_mask[b].sum()`` tokens long (R = the
    longest response).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    if any(len(r) == 0 for r in responses):
        raise ValueError(
            "an empty response has no tokens to score; give every response at least one token "
            "(e.g. the end-of-text token)."
        )
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
    """Rows of ``x (B, L, ...)`` at the positions that *predict* response tokens: ``starts - 1 +
    j``."""
    pos = (starts[:, None] - 1 + torch.arange(R, device=x.device)[None]).clamp(max=x.size(1) - 1)
    if x.dim() == 2:
        return x.gather(1, pos)
    return x.gather(1, pos[..., None].expand(-1, -1, x.size(-1)))


def response_token_stats(
    model: nn.Module,
    input_ids: torch.Tensor,
    starts: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    with_values: bool = False,
    with_entropy: bool = False,
) -> dict[str, torch.Tensor]:
    """Per response token, from ONE forward pass: ``logprobs (B, R)`` (0 on padding).

    ``model`` is a GPT (logits) or a :class:`~gptlib.rlhf.ppo.PolicyWithValue` (logits,
    values). With ``with_values`` the values ``(B, R)`` of the states that choose each response
    token come too, with ``with_entropy`` the entropy of each of those next-token distributions.
    The PPO update needs all three with gradients from the same pass, which is why this is not
    :func:`gptlib.evaluate.continuation_logprobs` (that one measures, without a critic); the
    log-probabilities themselves are :func:`gptlib.evaluate.token_logprobs`.
    """
    out = model(input_ids)
    logits, values = out if isinstance(out, tuple) else (out, None)
    R = response_mask.size(1)
    logits_r = _gather_response(logits, starts, R)  # (B, R, V)
    pos = starts[:, None] + torch.arange(R, device=input_ids.device)[None]
    targets = input_ids.gather(1, pos.clamp(max=input_ids.size(1) - 1))
    result = {"logprobs": token_logprobs(logits_r, targets) * response_mask}
    if with_values:
        if values is None:
            raise ValueError(
                "with_values=True needs a PolicyWithValue (the plain GPT has no value head)."
            )
        result["values"] = _gather_response(values, starts, R) * response_mask
    if with_entropy:
        logp_all = torch.log_softmax(logits_r.float(), dim=-1)
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
    responses = sample_responses(
        lm, ids, max_new_tokens, eos_token=eos_token, temperature=temperature, generator=generator
    )
    lp = continuation_logprobs(lm, ids, responses)
    lr = continuation_logprobs(ref_model, ids, responses)
    return [tokenizer.decode(r) for r in responses], (lp - lr).cpu()


def gold_metrics_fn(world, prompt_of: dict) -> Callable[[list[str], list[str]], dict]:
    """``metrics_fn`` for :class:`~gptlib.rlhf.ppo.PPOTrainer`: the mean gold reward of the samples
    (never trained on)."""

    def fn(prompts: list[str], responses: list[str]) -> dict:
        gold = [world.gold_reward(prompt_of[p], r) for p, r in zip(prompts, responses)]
        return {"gold": sum(gold) / len(gold)}

    return fn


def evaluate_policy(
    lm: GPT,
    ref: GPT,
    tokenizer,
    world,
    prompts: Sequence,
    reward_fn: RewardFn,
    *,
    max_new_tokens: int = 48,
    seed: int = 0,
) -> dict:
    """Sample once per test prompt (temperature 1): mean proxy reward, gold reward and KL to
    ``ref``."""
    texts = [p.formatted for p in prompts]
    eos = tokenizer.encode("\n")[0]
    gen = torch.Generator().manual_seed(seed)
    responses, kl = sample_with_kl(
        lm, ref, tokenizer, texts, max_new_tokens, eos_token=eos, generator=gen
    )
    proxy = torch.as_tensor(reward_fn(texts, responses)).float()
    gold = [world.gold_reward(p, r) for p, r in zip(prompts, responses)]
    return {
        "proxy": proxy.mean().item(),
        "gold": sum(gold) / len(gold),
        "kl": kl.mean().item(),
        "samples": [[p.text, r] for p, r in list(zip(prompts, responses))[:6]],
    }
