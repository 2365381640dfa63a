"""Few-shot prompting versus fine-tuning on the same ``k`` examples (GPT-3's trade-off).

:func:`finetune_on_examples` puts ``k`` solved examples into (a copy of) the weights;
:func:`fewshot_vs_finetune` compares that with putting them in the prompt, on fresh draws of a
task family of :mod:`gptlib.icl`.
"""

from __future__ import annotations

import copy
import random
from typing import Sequence

import torch

from gptlib.evaluate import eval_mode
from gptlib.icl import TaskFamily, build_prompt

__all__ = ["finetune_on_examples", "fewshot_vs_finetune", "first_answers"]

# --------------------------------------------------------------------------------------
# Few-shot versus fine-tuning on the same k examples
# --------------------------------------------------------------------------------------


@torch.no_grad()
def first_answers(model, tokenizer, prompts: Sequence[str]) -> list[str]:
    """The most likely next token after each prompt, decoded."""
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for prompt in prompts:
            ids = tokenizer.encode(prompt)[-model.config.block_size :]
            logits = model(torch.tensor([ids], device=device))[0, -1]
            out.append(tokenizer.decode([int(logits.argmax())]))
    return out


def finetune_on_examples(
    model,
    tokenizer,
    examples: Sequence[tuple[str, str]],
    steps: int = 40,
    lr: float = 1e-3,
    family: TaskFamily | None = None,
):
    """A fine-tuned *copy* of ``model``: ``steps`` AdamW steps on ``examples`` as zero-shot lines.

    Each example ``(x, y)`` becomes the prompt ``"\\nx="`` with the answer ``y``; the loss is
    ``-log P(y | prompt)`` (:func:`gptlib.evaluate.continuation_logprobs` with gradients), all
    examples in one batch. The original model is untouched: fine-tuning GPT-3's way means one
    copy of the weights per task, the cost few-shot prompting avoids. ``family`` sets the
    format of the zero-shot lines (``"x"`` alone for bare pairs); default ``"\\nx="``.
    """
    from gptlib.evaluate import continuation_logprobs

    if not examples:
        raise ValueError(
            "fine-tuning needs at least one example; with k = 0 there is nothing to learn"
        )
    tuned = copy.deepcopy(model)
    tuned.train()
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    prompt = family.prompt if family is not None else build_prompt
    prefixes = [tokenizer.encode(prompt([], x)) for x, _ in examples]
    answers = [tokenizer.encode(y) for _, y in examples]
    for _ in range(steps):
        loss = -continuation_logprobs(tuned, prefixes, answers, grad=True).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return tuned.eval()


def fewshot_vs_finetune(
    model,
    tokenizer,
    family: TaskFamily,
    k: int,
    n_tasks: int = 20,
    n_queries: int = 10,
    steps: int = 40,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Accuracy of the same ``k`` examples used two ways, on ``n_tasks`` fresh draws of ``family``.

    For each draw: ``k`` solved examples and ``n_queries`` fresh questions of the same task.
    ``"few-shot"``: the examples in the prompt, no weight changes. ``"fine-tuned"``: the
    examples in the weights (:func:`finetune_on_examples`), zero-shot prompts. ``"zero-shot"``:
    neither (the floor). Returns one accuracy per draw and method, for error bars.
    """
    rng = random.Random(f"fewshot-vs-finetune/{seed}/{family.name}/{k}")
    out: dict[str, list[float]] = {"zero-shot": [], "few-shot": [], "fine-tuned": []}
    for _ in range(n_tasks):
        task = family.draw(rng)
        shots = [(x, task.solve(x)) for x in (task.make_input(rng) for _ in range(k))]
        queries = [(x, task.solve(x)) for x in (task.make_input(rng) for _ in range(n_queries))]
        zero = [family.prompt([], x) for x, _ in queries]
        few = [family.prompt(shots, x) for x, _ in queries]
        tuned = finetune_on_examples(model, tokenizer, shots, steps, lr, family)
        for name, m, prompts in (
            ("zero-shot", model, zero),
            ("few-shot", model, few),
            ("fine-tuned", tuned, zero),
        ):
            got = first_answers(m, tokenizer, prompts)
            out[name].append(sum(g == y for g, (_, y) in zip(got, queries)) / n_queries)
    return out
