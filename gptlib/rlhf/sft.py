"""Supervised fine-tuning (SFT): step 1 of InstructGPT, with the loss on the response only.

A demonstration is a pair (prompt, response). Fine-tuning on it is ordinary next-token
training on ``prompt + response``, with one change: the positions whose *target* is a prompt
token get the label ``-100`` (ignored by the cross entropy), so the model is taught to write
answers, not to predict the user's questions::

    text    U s e r : ␣ q … A s s i s t a n t : ␣ F e n q u i . ⏎
    target  -100 everywhere in the prompt ……………… F e n q u i . ⏎

Batches are ``(x, y)`` like :func:`gptlib.train.lm_batch_loss` expects, so :func:`sft_loss`
*is* that loss; what makes it SFT is :func:`encode_example`'s masking.

Also here, because chapters 11-14 all need them:

- :func:`generate_responses`: sample replies to many formatted prompts (batched by length,
  stopping at the newline that ends a response);
- :func:`response_logprobs`: ``log pi(response | prompt)`` summed over the response tokens;
- :func:`win_rate`: how often one policy's answers beat another's under a reward.

The shipped models are assets: ``gptlib.assets.load("rlhf/base")`` and ``"rlhf/sft"``
(made by ``python -m gptlib.recipes rlhf``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from gptlib.evaluate import continuation_logprobs
from gptlib.model import lm_loss

__all__ = [
    "IGNORE",
    "encode_example",
    "collate_examples",
    "sft_examples",
    "make_sft_batch_fn",
    "sft_loss",
    "generate_responses",
    "response_logprobs",
    "win_rate",
    "finetune_config",
    "train_sft",
]

IGNORE = -100  # label of positions that do not count in the loss


def encode_example(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """``(input ids, labels)`` for one demonstration, labels already shifted by one.

    ``ids = encode(prompt + response)[:-1]`` and ``labels = encode(prompt + response)[1:]``
    with every label that is a prompt token replaced by :data:`IGNORE`. The first response
    token is predicted from the last prompt position, so it *is* counted.
    """
    p = tokenizer.encode(prompt)
    r = tokenizer.encode(response)
    if not p:
        raise ValueError("encode_example needs a non-empty prompt (format it with format_prompt).")
    if not r:
        raise ValueError("encode_example needs a non-empty response.")
    full = p + r
    labels = [IGNORE] * (len(p) - 1) + r
    return full[:-1], labels


def collate_examples(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(ids, labels)`` pairs into ``x (B, T)`` and ``y (B, T)`` (padding labelled
    IGNORE)."""
    T = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for i, (ids, labels) in enumerate(examples):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(labels)] = torch.tensor(labels)
    return x, y


def sft_examples(world, split: str, n: int, seed: int = 0,
                 concise_share: float | None = None) -> list[tuple[str, str]]:
    """``n`` (formatted prompt, demonstration) pairs of ``split``: the labellers' SFT data.

    ``concise_share=None`` gives every prompt the careful, concise
    :meth:`~gptlib.rlhf.world.ToyWorld.demonstration`; a number draws each from the pool of
    labellers (:meth:`~gptlib.rlhf.world.ToyWorld.labeller_demonstration`), of whom that share
    write concisely and the others with their habits.
    """
    import random

    prompts = world.prompts(split, n, seed=seed)
    if concise_share is None:
        return [(p.formatted, world.demonstration(p)) for p in prompts]
    rng = random.Random(f"labellers-{split}-{seed}")
    return [(p.formatted, world.labeller_demonstration(p, rng, concise_share)) for p in prompts]


def make_sft_batch_fn(
    tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int, block_size: int | None = None
) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A ``batch_fn(generator) -> (x, y)`` for :func:`gptlib.train.train`: random demonstrations.

    Examples longer than ``block_size`` raise (crop the prompt or raise the block size).
    """
    encoded = [encode_example(tokenizer, p, r) for p, r in pairs]
    if not encoded:
        raise ValueError("make_sft_batch_fn needs at least one (prompt, response) pair.")
    if block_size is not None:
        too_long = max(len(ids) for ids, _ in encoded)
        if too_long > block_size:
            raise ValueError(
                f"an example has {too_long} tokens, more than block_size={block_size}; "
                "use shorter prompts or a model with a larger block_size."
            )

    def batch_fn(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(encoded), (batch_size,), generator=generator).tolist()
        return collate_examples([encoded[i] for i in rows])

    return batch_fn


def sft_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross entropy over the *response* tokens of ``batch = (x, y)``.

    Usable as ``loss_fn`` of :func:`gptlib.train.train`. Positions labelled ``-100`` (prompt and
    padding) do not count: a response token weighs the same in a long or a short prompt.
    """
    x, y = batch
    if x.shape != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape.")
    if not bool((y != IGNORE).any()):
        raise ValueError("sft_loss: every label is -100 (no response token in the batch).")
    logits = model(x)
    if isinstance(logits, tuple):
        logits = logits[0]
    return lm_loss(logits, y, ignore_index=IGNORE)


def _stop_at_newline(text: str) -> str:
    cut = text.find("\n")
    return text if cut < 0 else text[: cut + 1]


@torch.no_grad()
def generate_responses(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 48,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> list[str]:
    """Replies to formatted ``prompts`` (``Prompt.formatted``), each cut after its first newline.

    Prompts of equal token length are generated together (``gptlib.sampling.generate`` has no
    left padding), in chunks of ``batch_size``; a reply that reaches ``max_new_tokens`` without a
    newline is returned as it is (without one). Sampling draws from ``generator`` when given.
    """
    from gptlib.sampling import generate

    newline = tokenizer.encode("\n")[0]
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = {}
    encoded = [tokenizer.encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    out: list[str] = [""] * len(prompts)
    for length in sorted(by_length):
        rows = by_length[length]
        room = model.config.block_size - length
        if room < 1:
            raise ValueError(
                f"a prompt has {length} tokens, no room left in "
                f"block_size={model.config.block_size}."
            )
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            idx = torch.tensor([encoded[i] for i in chunk], dtype=torch.long, device=device)
            res = generate(
                model,
                idx,
                min(max_new_tokens, room),
                greedy=greedy,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
                eos_token=newline,
                pad_token=newline,
            )
            for i, row in zip(chunk, res[:, length:].tolist()):
                out[i] = _stop_at_newline(tokenizer.decode(row))
    return out


def response_logprobs(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    grad: bool = False,
) -> torch.Tensor:
    """``(B,)`` sums of ``log pi(response token | everything before)`` over each response.

    :func:`gptlib.evaluate.continuation_logprobs` on the encoded texts. With ``grad=True`` the
    result keeps its graph (for DPO's loss) and the model's mode is left to the caller;
    otherwise no gradients, in eval mode.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    pre = [tokenizer.encode(p) for p in prompts]
    cont = [tokenizer.encode(r) for r in responses]
    if any(not p for p in pre):
        raise ValueError(
            "response_logprobs needs non-empty prompts (format them with format_prompt)."
        )
    return continuation_logprobs(model, pre, cont, grad=grad)


def win_rate(
    reward: Callable[[object, str], float],
    prompts: Sequence,
    responses_a: Sequence[str],
    responses_b: Sequence[str],
) -> float:
    """Fraction of prompts where ``a`` beats ``b`` under ``reward(prompt, response)``; ties count
    1/2."""
    if not (len(prompts) == len(responses_a) == len(responses_b)) or not prompts:
        raise ValueError("win_rate needs equally many (>= 1) prompts, responses_a and responses_b.")
    score = 0.0
    for p, a, b in zip(prompts, responses_a, responses_b):
        ra, rb = reward(p, a), reward(p, b)
        score += 1.0 if ra > rb else (0.5 if ra == rb else 0.0)
    return score / len(prompts)


def finetune_config(
    iters: int, batch_size: int, block_size: int, lr: float, seed: int = 0, progress: bool = False
):
    """The short fine-tuning schedule shared by SFT and the reward model: warm-up over 5% of the
    steps, cosine to lr/10, no weight decay, four evaluations."""
    from gptlib.train import TrainConfig

    return TrainConfig(
        max_iters=iters,
        batch_size=batch_size,
        block_size=block_size,
        lr=lr,
        min_lr=lr / 10,
        warmup_iters=max(1, iters // 20),
        weight_decay=0.0,
        eval_interval=max(1, iters // 4),
        eval_iters=4,
        log_interval=max(1, iters // 50),
        progress=progress,
        seed=seed,
    )


def train_sft(
    model: torch.nn.Module,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    iters: int = 300,
    batch_size: int = 32,
    lr: float = 5e-4,
    val_pairs: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    callback=None,
    progress: bool = False,
):
    """Fine-tune ``model`` in place on demonstrations with :func:`sft_loss`; returns the
    ``TrainResult``."""
    from gptlib.train import train

    block = model.config.block_size
    cfg = finetune_config(iters, batch_size, block, lr, seed, progress)
    val = make_sft_batch_fn(tokenizer, val_pairs, batch_size, block) if val_pairs else None
    return train(
        model,
        cfg,
        make_sft_batch_fn(tokenizer, pairs, batch_size, block),
        val,
        loss_fn=sft_loss,
        callback=callback,
    )
