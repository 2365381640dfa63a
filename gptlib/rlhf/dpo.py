"""Direct preference optimisation (DPO, Rafailov et al., 2023): RLHF without the RL.

PPO maximises ``r(x, y) - beta * KL(pi || pi_ref)``. That objective has a closed-form optimum,
``pi*(y|x) ∝ pi_ref(y|x) * exp(r(x, y) / beta)``, so a reward can be read off any policy:
``r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) + beta * log Z(x)``. Put this *implicit reward*
into the reward model's pairwise (Bradley-Terry) loss and ``Z(x)`` cancels between the chosen
answer ``y_w`` and the rejected one ``y_l``::

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x))
                                - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

No reward model, no sampling, no value head: one supervised loss on the preference pairs.
``log pi(y|x)`` is the sum of the log-probabilities of the *response* tokens only (the prompt
is given, not chosen).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["dpo_loss", "dpo_loss_reference", "DPOPair", "pairs_from_ranking", "train_dpo"]

DPOPair = tuple[str, str, str]  # (formatted prompt, chosen response, rejected response)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss from sequence log-probs ``(B,)`` of the chosen and rejected responses.

    Returns ``(loss, chosen_rewards, rejected_rewards)``: the mean loss and the implicit rewards
    ``beta * (log pi - log pi_ref)`` of each answer (detached; their difference is the margin).
    ``-log sigmoid(z)`` is computed as ``softplus(-z)``, which does not overflow for large ``|z|``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta} (it is the strength of the KL leash).")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1:
        raise ValueError(
            f"the four log-prob tensors must have one shape (B,), got {sorted(shapes)}."
        )
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    logits = beta * (chosen_logratio - rejected_logratio)
    loss = F.softplus(-logits).mean()
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def dpo_loss_reference(pw: float, pl: float, rw: float, rl: float, beta: float) -> float:
    """The same loss for one pair, in plain Python floats (for tests and the exercise)."""
    import math

    z = beta * ((pw - rw) - (pl - rl))
    return -math.log(1.0 / (1.0 + math.exp(-z)))


def pairs_from_ranking(
    prompt: str, responses: Sequence[str], ranking: Sequence[int], all_pairs: bool = True
) -> list[DPOPair]:
    """Preference pairs from one K-wise ranking (indices best first, e.g. ``ToyWorld.rank``).

    ``all_pairs=True`` gives all C(K, 2) (better, worse) pairs, as InstructGPT's reward model
    uses them; ``False`` only (best, worst).
    """
    if sorted(ranking) != list(range(len(responses))):
        raise ValueError(
            f"ranking {list(ranking)} must be a permutation of 0..{len(responses) - 1}."
        )
    order = [responses[i] for i in ranking]
    if not all_pairs:
        return [(prompt, order[0], order[-1])] if len(order) > 1 else []
    return [
        (prompt, order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))
    ]


def train_dpo(
    policy: torch.nn.Module,
    ref_model: torch.nn.Module,
    tokenizer,
    pairs: Sequence[DPOPair],
    *,
    beta: float = 0.1,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    eval_every: int = 0,
    eval_fn: Callable[[torch.nn.Module], dict] | None = None,
) -> list[dict]:
    """Fine-tune ``policy`` (in place) with the DPO loss on ``(prompt, chosen, rejected)`` pairs.

    ``ref_model`` is frozen (usually a copy of the SFT model the policy starts from). Each step
    draws ``batch_size`` random pairs. Returns a history: per step the loss, the mean implicit
    reward margin (chosen - rejected) and the preference accuracy (share of pairs with margin > 0);
    every ``eval_every`` steps ``eval_fn(policy)``'s numbers are merged in.
    """
    from gptlib.rlhf.sft import response_logprobs

    if not pairs:
        raise ValueError("train_dpo needs at least one (prompt, chosen, rejected) pair.")
    bad = [i for i, p in enumerate(pairs) if len(p) != 3]
    if bad:
        raise ValueError(f"pair {bad[0]} is not (prompt, chosen, rejected): {pairs[bad[0]]!r}")
    if policy is ref_model:
        raise ValueError(
            "the reference model must be a separate frozen copy: train_dpo(copy.deepcopy(sft), "
            "sft, ...)."
        )
    ref_model.requires_grad_(False)
    ref_model.eval()
    policy.requires_grad_(True)  # a deepcopy of a frozen reference would otherwise never learn
    policy.eval()  # no dropout, so log pi = log pi_ref exactly at step 0
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="dpo", unit="step", dynamic_ncols=True)
    try:
        for step in range(steps):
            t0 = time.perf_counter()
            rows = torch.randint(len(pairs), (batch_size,), generator=gen).tolist()
            prompts = [pairs[i][0] for i in rows]
            chosen = [pairs[i][1] for i in rows]
            rejected = [pairs[i][2] for i in rows]
            with torch.no_grad():
                ref_w = response_logprobs(ref_model, tokenizer, prompts, chosen)
                ref_l = response_logprobs(ref_model, tokenizer, prompts, rejected)
            pol = response_logprobs(
                policy, tokenizer, prompts + prompts, chosen + rejected, grad=True
            )
            pol_w, pol_l = pol[:batch_size], pol[batch_size:]
            loss, r_w, r_l = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            margin = r_w - r_l
            entry = {
                "step": step,
                "loss": loss.item(),
                "margin": margin.mean().item(),
                "accuracy": (margin > 0).float().mean().item(),
                "chosen_reward": r_w.mean().item(),
                "rejected_reward": r_l.mean().item(),
                "seconds": time.perf_counter() - t0,
            }
            if (
                eval_fn is not None
                and eval_every
                and ((step + 1) % eval_every == 0 or step + 1 == steps)
            ):
                entry.update({k: float(v) for k, v in eval_fn(policy).items()})
            history.append(entry)
            if callback is not None:
                callback(entry)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{entry['loss']:.3f}",
                    margin=f"{entry['margin']:.2f}",
                    acc=f"{entry['accuracy']:.2f}",
                )
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return history
