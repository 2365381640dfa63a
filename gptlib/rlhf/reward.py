"""The reward model (RM): step 2 of InstructGPT, trained on rankings.

A labeller sees one prompt and K answers and ranks them, best first. A ranking of K answers
holds C(K, 2) = K(K-1)/2 comparisons "w is better than l". The reward model is the SFT model
with its language-model output replaced by a scalar head (:class:`RewardModel`), and it is
trained so that the better answer of each pair scores higher::

    loss = - mean over pairs (w, l) of  log sigmoid( r(x, y_w) - r(x, y_l) )

InstructGPT puts *all* C(K, 2) pairs of one ranking in the same batch: each of the K answers
goes through the network once and its score is reused in K-1 pairs (cheaper, and it avoided
the over-fitting they saw when the pairs of a ranking were shuffled into different batches).
:func:`rm_batch` does exactly that: ``ids`` holds every answer once, ``win``/``lose`` index the
pairs.

Measuring it: :func:`comparison_accuracy` on held-out pairs; the gold reward of the world says
how far the RM can be trusted (chapter 12). :func:`make_reward_fn` is what PPO calls. The
shipped RM is the asset ``rlhf/reward`` (``gptlib.assets.load("rlhf/reward").model``).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gptlib.heads import SequenceClassifier, pad_right

__all__ = [
    "RewardModel",
    "Comparison",
    "ranking_pairs",
    "make_comparisons",
    "sample_comparisons",
    "rm_batch",
    "make_rm_batch_fn",
    "pairwise_loss",
    "rm_loss",
    "score_responses",
    "make_reward_fn",
    "comparison_accuracy",
    "train_reward_model",
    "response_features",
    "fit_linear_reward",
]


class RewardModel(SequenceClassifier):
    """A GPT body with a scalar head on the hidden state of the last real token.

    ``rm(ids, mask)`` returns ``(B,)`` rewards. Usually initialised from the SFT model
    (InstructGPT used a 6B SFT model for its RM).
    """

    def __init__(self, gpt: torch.nn.Module, dropout: float = 0.0) -> None:
        super().__init__(gpt, n_classes=1, pool="last", dropout=dropout)

    @classmethod
    def from_config(cls, config: dict) -> "RewardModel":
        """An untrained reward model whose body is ``GPT.from_config(config)`` (how
        :func:`gptlib.assets.load` rebuilds ``rlhf/reward``: one ``model.safetensors``)."""
        from gptlib.model import GPT

        return cls(GPT.from_config(config))

    def forward(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return self.head(self.dropout(self.features(idx, mask))).squeeze(-1)

    def score(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self(idx, mask)


@dataclass
class Comparison:
    """One labelled ranking: ``responses`` to ``prompt`` and ``ranking`` (indices, best first)."""

    prompt: object  # a gptlib.rlhf.world.Prompt
    responses: list[str]
    ranking: list[int]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return ranking_pairs(self.ranking)


def ranking_pairs(ranking: Sequence[int]) -> list[tuple[int, int]]:
    """All C(K, 2) ``(winner, loser)`` pairs of a ranking given best first.

    >>> ranking_pairs([2, 0, 1])
    [(2, 0), (2, 1), (0, 1)]
    """
    if len(set(ranking)) != len(ranking):
        raise ValueError(f"a ranking lists each response once, got {list(ranking)}")
    return [(ranking[i], ranking[j]) for i, j in itertools.combinations(range(len(ranking)), 2)]


def make_comparisons(
    world, split: str, n_prompts: int, k: int, noise: float = 0.0, seed: int = 0
) -> list[Comparison]:
    """``n_prompts`` rankings of ``k`` candidates each, labelled by ``world.rank`` with
    ``noise``."""
    rng = random.Random(f"comparisons-{split}-{k}-{noise}-{seed}")
    out = []
    for p in world.prompts(split, n_prompts, seed=seed):
        responses = world.candidates(p, k, rng)
        out.append(Comparison(p, responses, world.rank(p, responses, noise=noise, rng=rng)))
    return out


def sample_comparisons(world, policy: torch.nn.Module, tokenizer, prompts: Sequence, k: int,
                       *, noise: float = 0.0, extra_candidates: int = 0, temperature: float = 1.0,
                       max_new_tokens: int = 64, seed: int = 0) -> list[Comparison]:
    """InstructGPT's comparisons: ``k`` samples of ``policy`` per prompt, ranked by the labeller.

    Each prompt gets ``k`` replies sampled at ``temperature`` (duplicates dropped: a labeller
    ranks distinct answers), plus ``extra_candidates`` written ones from
    :meth:`~gptlib.rlhf.world.ToyWorld.candidates`; ``world.rank`` orders them with its
    ``noise``. Prompts whose samples are all alike (and no extra candidates) are skipped.
    """
    from gptlib.rlhf.sft import generate_responses

    rng = random.Random(f"sampled-comparisons-{k}-{noise}-{seed}")
    gen = torch.Generator().manual_seed(seed)
    texts = [_prompt_text(p) for p in prompts]
    samples = [generate_responses(policy, tokenizer, texts, max_new_tokens,
                                  temperature=temperature, generator=gen) for _ in range(k)]
    out = []
    for i, p in enumerate(prompts):
        replies = list(dict.fromkeys(s[i] for s in samples))
        if extra_candidates:
            written = world.candidates(p, min(9, extra_candidates + 2), rng)
            replies += [r for r in written if r not in replies][:extra_candidates]
        if len(replies) < 2:
            continue
        out.append(Comparison(p, replies, world.rank(p, replies, noise=noise, rng=rng)))
    return out


def _encode(tokenizer, prompt: str, response: str, block_size: int) -> list[int]:
    ids = tokenizer.encode(prompt + response)
    return ids[-block_size:]  # a sample longer than the context keeps its end (the answer)


def _prompt_text(prompt) -> str:
    return prompt.formatted if hasattr(prompt, "formatted") else str(prompt)


def rm_batch(
    tokenizer, comparisons: Sequence[Comparison], block_size: int
) -> dict[str, torch.Tensor]:
    """One batch of rankings: every response encoded once, plus the indices of all pairs.

    Returns ``ids (N, T)``, ``mask (N, T)`` for the N responses of all rankings, and ``win``,
    ``lose`` ``(P,)``: row numbers of the winner and loser of each of the P = sum C(K, 2) pairs.
    """
    seqs, win, lose = [], [], []
    for c in comparisons:
        base = len(seqs)
        seqs += [_encode(tokenizer, _prompt_text(c.prompt), r, block_size) for r in c.responses]
        for w, lo in c.pairs:
            win.append(base + w)
            lose.append(base + lo)
    ids, mask = pad_right(seqs)
    return {
        "ids": ids,
        "mask": mask,
        "win": torch.tensor(win, dtype=torch.long),
        "lose": torch.tensor(lose, dtype=torch.long),
    }


def make_rm_batch_fn(
    tokenizer, comparisons: Sequence[Comparison], rankings_per_batch: int, block_size: int
) -> Callable[[torch.Generator], dict[str, torch.Tensor]]:
    """A ``batch_fn(generator)`` for :func:`gptlib.train.train`: random whole rankings per batch."""
    if not comparisons:
        raise ValueError("make_rm_batch_fn needs at least one comparison.")

    def batch_fn(generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = torch.randint(len(comparisons), (rankings_per_batch,), generator=generator).tolist()
        return rm_batch(tokenizer, [comparisons[i] for i in rows], block_size)

    return batch_fn


def pairwise_loss(r_win: torch.Tensor, r_lose: torch.Tensor) -> torch.Tensor:
    """``mean(-log sigmoid(r_win - r_lose))`` (``F.logsigmoid`` keeps it stable for large gaps)."""
    return -F.logsigmoid(r_win - r_lose).mean()


def rm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``loss_fn`` for :func:`gptlib.train.train`: score each response once, then all pairs."""
    rewards = model(batch["ids"], batch["mask"])
    return pairwise_loss(rewards[batch["win"]], rewards[batch["lose"]])


@torch.no_grad()
def score_responses(
    rm: torch.nn.Module,
    tokenizer,
    prompts: Sequence,
    responses: Sequence[str],
    batch_size: int = 128,
) -> torch.Tensor:
    """``(B,)`` rewards of (prompt, response) pairs; prompts are formatted strings or ``Prompt``
    objects."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    if len(prompts) == 0:
        return torch.zeros(0)
    device = next(rm.parameters()).device
    block = rm.config.block_size
    was_training = rm.training
    rm.eval()
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            seqs = [
                _encode(tokenizer, _prompt_text(p), r, block)
                for p, r in zip(
                    prompts[start : start + batch_size], responses[start : start + batch_size]
                )
            ]
            seqs = [s if s else tokenizer.encode("\n") for s in seqs]
            ids, mask = pad_right(seqs)
            out.append(rm(ids.to(device), mask.to(device)).float())
    finally:
        rm.train(was_training)
    return torch.cat(out)


def make_reward_fn(
    rm: torch.nn.Module, tokenizer
) -> Callable[[list[str], list[str]], torch.Tensor]:
    """``reward_fn(prompts, responses) -> (B,)`` float rewards from the RM (no gradients).

    ``prompts`` are formatted dialogue prompts (``Prompt.formatted``) or ``Prompt`` objects;
    each response is the text after ``"Assistant: "``. The result is on the RM's device.
    """

    def reward_fn(prompts: list[str], responses: list[str]) -> torch.Tensor:
        return score_responses(rm, tokenizer, prompts, responses)

    return reward_fn


def comparison_accuracy(
    reward_fn: Callable[[list, list[str]], torch.Tensor],
    comparisons: Sequence[Comparison],
    gold=None,
) -> float:
    """Fraction of pairs the reward ranks like the labels (or like ``gold.gold_reward`` if given).

    With ``gold`` (a ``ToyWorld``), pairs whose gold rewards tie are skipped, so the number is
    the agreement with the *true* preference, not with a noisy labeller.
    """
    prompts, responses = [], []
    for c in comparisons:
        prompts += [c.prompt] * len(c.responses)
        responses += list(c.responses)
    scores = reward_fn(prompts, responses).float().cpu()
    right = total = 0
    base = 0
    for c in comparisons:
        s = scores[base : base + len(c.responses)]
        if gold is None:
            pairs = c.pairs
        else:
            g = [gold.gold_reward(c.prompt, r) for r in c.responses]
            pairs = [
                (a, b) if g[a] > g[b] else (b, a)
                for a, b in itertools.combinations(range(len(g)), 2)
                if g[a] != g[b]
            ]
        right += sum(int(s[w] > s[lo]) for w, lo in pairs)
        total += len(pairs)
        base += len(c.responses)
    if total == 0:
        raise ValueError("no comparable pairs (every pair ties).")
    return right / total


def train_reward_model(
    rm: RewardModel,
    tokenizer,
    comparisons: Sequence[Comparison],
    *,
    iters: int = 300,
    rankings_per_batch: int = 8,
    lr: float = 3e-4,
    val: Sequence[Comparison] | None = None,
    seed: int = 0,
    callback=None,
    progress: bool = False,
):
    """Train ``rm`` in place with :func:`rm_loss` (all C(K,2) pairs of each ranking in one
    batch)."""
    from gptlib.rlhf.sft import finetune_config
    from gptlib.train import train

    block = rm.config.block_size
    cfg = finetune_config(iters, rankings_per_batch, block, lr, seed, progress)
    val_fn = make_rm_batch_fn(tokenizer, val, rankings_per_batch, block) if val else None
    return train(
        rm,
        cfg,
        make_rm_batch_fn(tokenizer, comparisons, rankings_per_batch, block),
        val_fn,
        loss_fn=rm_loss,
        callback=callback,
    )


@torch.no_grad()
def response_features(
    gpt: torch.nn.Module,
    tokenizer,
    prompts: Sequence,
    responses: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """``(N, n_embd)`` hidden states of ``gpt`` at the last token of each (prompt, response): what a
    reward head reads. With a frozen body, a reward model is a linear function of these."""
    probe = RewardModel(gpt).to(next(gpt.parameters()).device).eval()
    device = next(gpt.parameters()).device
    block = gpt.config.block_size
    out = []
    for start in range(0, len(prompts), batch_size):
        seqs = [
            _encode(tokenizer, _prompt_text(p), r, block)
            for p, r in zip(
                prompts[start : start + batch_size], responses[start : start + batch_size]
            )
        ]
        ids, mask = pad_right(seqs)
        out.append(probe.features(ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out)


def fit_linear_reward(
    features: torch.Tensor,
    win: torch.Tensor,
    lose: torch.Tensor,
    iters: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> torch.nn.Linear:
    """A reward head ``Linear(n_embd, 1)`` fitted on frozen ``features`` with :func:`pairwise_loss`.

    The cheap reward model of chapter 12's experiments (full-batch AdamW, seconds on a CPU):
    same loss and data as the real one, but only the head learns.
    """
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], 1)
    torch.nn.init.zeros_(head.weight)
    mu, sd = features.mean(0), features.std(0) + 1e-6
    x = (features - mu) / sd
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(iters):
        r = head(x).squeeze(-1)
        loss = pairwise_loss(r[win], r[lose])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the head: head(features) directly
        head.weight /= sd
        head.bias -= (head.weight * mu).sum()
    return head
