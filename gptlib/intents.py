"""The phone assistant of the seed article, in context.

Four skills, 订机票 / 通讯录 / 打电话 / 发短信, and a request that fits none, 预约会议室.

:func:`intent_prompt` writes a few-shot prompt with ``k`` labelled requests of each in-scope
intent (letters drawn afresh per prompt) and a question; :func:`evaluate_intents` measures
in-scope accuracy and out-of-scope detection (域外意图检测) against ``k``. The intents and their
templates are :data:`gptlib.icl.INTENTS`. ``fmt="names"`` writes every request as its
intent's name, in bare pairs (``打电话C订机票A预约会议室``, the format of
:func:`gptlib.icl.intent_names_family`), for models that look labels up but read no wording.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from gptlib.evaluate import eval_mode
from gptlib.icl import (
    _INTENT_LABELS,
    INTENTS,
    NONE_LABEL,
    OUT_OF_SCOPE,
    SEED_INTENTS,
    _utterance,
    build_prompt,
)

__all__ = ["intent_prompt", "evaluate_intents"]


def intent_prompt(
    rng: random.Random,
    shots_per_intent: int,
    query_intent: str,
    in_scope: Sequence[str] = SEED_INTENTS,
    fmt: str = "utterance",
) -> tuple[str, str, dict[str, str]]:
    """A few-shot prompt for the assistant: ``shots_per_intent`` requests of each in-scope intent
    (shuffled, letters drawn afresh), then a request of ``query_intent``.

    Returns ``(prompt, answer, labels)``; the answer is ``"N"`` when ``query_intent`` is not in
    scope.
    """
    if query_intent not in INTENTS:
        raise ValueError(f"unknown intent {query_intent!r}; choose from {list(INTENTS)}")
    if fmt not in ("utterance", "names"):
        raise ValueError(f"fmt must be 'utterance' (templated requests) or 'names', not {fmt!r}")
    say = _utterance if fmt == "utterance" else (lambda r, intent: intent)
    labels = dict(zip(in_scope, rng.sample(_INTENT_LABELS, len(in_scope))))
    demos = [(say(rng, i), labels[i]) for i in in_scope for _ in range(shots_per_intent)]
    rng.shuffle(demos)
    fmt_kw = {} if fmt == "utterance" else {"sep": "", "end": ""}
    return (
        build_prompt(demos, say(rng, query_intent), **fmt_kw),
        labels.get(query_intent, NONE_LABEL),
        labels,
    )


@torch.no_grad()
def evaluate_intents(
    model,
    tokenizer,
    shots_per_intent: Sequence[int],
    n: int = 100,
    seed: int = 0,
    in_scope: Sequence[str] = SEED_INTENTS,
    out_of_scope: str = OUT_OF_SCOPE,
    fmt: str = "utterance",
) -> dict:
    """In-scope accuracy and out-of-scope detection against shots per intent.

    For each ``k``: ``n`` prompts whose question is in scope (accuracy = the right letter) and
    ``n`` whose question is ``out_of_scope`` (detection = the answer ``N``). The prediction is
    the most likely next token after the prompt. Returns ``{k: {"in_scope": acc, "oos": acc,
    "false_none": share of in-scope questions answered N}}``; ``fmt`` as in
    :func:`intent_prompt`.
    """
    device = next(model.parameters()).device
    out = {}
    with eval_mode(model):
        for k in shots_per_intent:
            rng = random.Random(f"intent/{seed}/{k}")
            scores = {"in_scope": 0.0, "oos": 0.0, "false_none": 0.0}
            for kind in ("in_scope", "oos"):
                for _ in range(n):
                    q = rng.choice(list(in_scope)) if kind == "in_scope" else out_of_scope
                    prompt, answer, _ = intent_prompt(rng, k, q, in_scope, fmt)
                    ids = tokenizer.encode(prompt)[-model.config.block_size :]
                    logits = model(torch.tensor([ids], device=device))[0, -1]
                    pred = tokenizer.decode([int(logits.argmax())])
                    scores[kind] += (pred == answer) / n
                    if kind == "in_scope":
                        scores["false_none"] += (pred == NONE_LABEL) / n
            out[k] = scores
    return out
