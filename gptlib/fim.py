"""Fill in the middle (FIM): teaching a left-to-right model to insert.

A GPT reads left to right, so it can continue a file but cannot fill a hole whose *suffix*
is already written (the line that binds ``total`` when every line below uses ``total``).
Bavarian et al. (2022) showed a free trick: move the middle to the end. Cut a training
document at two random character positions into ``prefix``, ``middle`` and ``suffix`` and
train on

    PSM:  <PRE> prefix <SUF> suffix <MID> middle <EOT>

(prefix-suffix-middle). The model still only predicts the next token, but when it writes the
middle it has already read both sides. At inference the prompt is
``<PRE> prefix <SUF> suffix <MID>`` and generation runs until ``<EOT>``. Only a fraction of the
documents (the *FIM rate*) is transformed; the rest stay plain left-to-right text, so the
same model keeps doing ordinary completion. SPM (suffix-prefix-middle) is the other order,
``<PRE> <SUF> suffix <MID> prefix middle <EOT>``; training on both ("joint") is the paper's
recommendation.

Sentinels. The book's :class:`~gptlib.tokenizer.CharTokenizer` maps single characters to
ids and has no notion of special tokens, so this module reserves four characters of the
Unicode private-use area (U+E000..U+E003), which never occur in source code, as the special
tokens <PRE>, <SUF>, <MID> and <EOT>. :func:`fim_tokenizer` builds a CharTokenizer over
printable ASCII plus those four; :func:`show` prints them by name.

The transform itself (sentinels, PSM/SPM, the training stream) is :mod:`gptlib.fimtext`,
re-exported here. What chapter 9 measures with (the corpus of functions is
:mod:`gptlib.toycode`, editing by instruction :mod:`gptlib.edit`, the recipe that trains the
shipped models ``gptlib/recipes/fim.py``):

* :func:`middle_nll`: the negative log-likelihood of a hole's true middle, given prefix and
  suffix (FIM) or the prefix alone (left to right); :func:`compare_infilling` measures it
  for the shipped ``fim/fim`` and ``fim/l2r`` models on fresh functions;
* :func:`infill` and :func:`complete_lines` (the two ways to fill a hole),
  :func:`pass_rate` (run the filled function against its unit tests) and
  :func:`best_of_m` (the left-to-right baseline that samples ``m`` middles and keeps the one
  that makes the whole file most likely);
* :func:`left_to_right_loss`: the ordinary next-token loss on plain documents (FIM-for-free).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

# The transform is re-exported: a chapter imports everything about FIM from gptlib.fim.
from gptlib import fimtext
from gptlib.fimtext import (  # noqa: F401
    EOT,
    MID,
    PRE,
    SENTINELS,
    SUF,
    apply_fim,
    build_stream,
    fim_prompt,
    fim_tokenizer,
    fim_transform,
    psm,
    show,
    split_document,
    spm,
    undo_fim,
)
from gptlib.toycode import Hole, function_corpus, make_hole

__all__ = [
    *fimtext.__all__,
    "infill",
    "complete_lines",
    "sample_middles",
    "middle_nll",
    "held_out_tasks",
    "compare_infilling",
    "pass_rate",
    "best_of_m",
    "BestOfM",
    "left_to_right_loss",
]

# --------------------------------------------------------------------------------------
# Inference: infill, and the left-to-right baseline
# --------------------------------------------------------------------------------------


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _generate_text(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    eos: str,
    *,
    greedy: bool,
    temperature: float,
    top_p: float | None,
    generator: torch.Generator | None,
) -> tuple[str, bool]:
    """Generate after ``prompt`` until the character ``eos`` (returned text excludes it)."""
    from gptlib.sampling import generate

    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=_model_device(model))
    block = model.config.block_size
    if ids.shape[1] >= block:
        ids = ids[:, -(block - 1) :]  # keep the end of the prompt (the part next to the hole)
    eos_id = tokenizer.encode(eos)[0]
    out = generate(
        model,
        ids,
        max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_p=top_p,
        eos_token=eos_id,
        generator=generator,
    )
    new = out[0, ids.shape[1] :].tolist()
    finished = bool(new) and new[-1] == eos_id
    if finished:
        new = new[:-1]
    return tokenizer.decode(new), finished


def infill(
    model: torch.nn.Module,
    tokenizer,
    prefix: str,
    suffix: str,
    max_new_tokens: int = 160,
    *,
    mode: str = "psm",
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """Fill the hole between ``prefix`` and ``suffix`` with a FIM-trained model.

    The prompt is ``<EOT>`` (a document boundary, as between training documents) followed by
    :func:`fim_prompt`; generation stops at ``<EOT>`` or after ``max_new_tokens``. Returns the
    middle (without the sentinel). A model never trained on FIM has no idea what the
    sentinels mean, and returns noise.
    """
    text, _ = _generate_text(
        model,
        tokenizer,
        EOT + fim_prompt(prefix, suffix, mode),
        max_new_tokens,
        EOT,
        greedy=greedy,
        temperature=temperature,
        top_p=top_p,
        generator=generator,
    )
    return text


def complete_lines(
    model: torch.nn.Module,
    tokenizer,
    prefix: str,
    n_lines: int,
    max_new_tokens: int = 160,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """The left-to-right baseline: continue ``prefix`` for ``n_lines`` lines, blind to the suffix.

    A left-to-right model cannot know where the hole ends, so we give it the number of lines
    of the true middle (a generous oracle) and cut its output there. Each line ends with ``\\n``.
    """
    if n_lines < 1:
        raise ValueError(f"n_lines must be >= 1, got {n_lines}.")
    text = ""
    for _ in range(n_lines):
        budget = max_new_tokens - len(text)
        if budget <= 0:
            break
        line, finished = _generate_text(
            model,
            tokenizer,
            EOT + prefix + text,
            budget,
            "\n",
            greedy=greedy,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
        )
        text += line.replace(EOT, "") + "\n"
        if not finished:
            break
    return text


# --------------------------------------------------------------------------------------
# Measuring: the likelihood of the true middle, executed fills, best-of-m, FIM for free
# --------------------------------------------------------------------------------------


def _context(hole: Hole, how: str, mode: str) -> str:
    if how == "fim":
        return EOT + fim_prompt(hole.prefix, hole.suffix, mode)
    if how == "l2r":
        return EOT + hole.prefix
    raise ValueError(f"how must be 'fim' (prefix and suffix) or 'l2r' (prefix only), got {how!r}.")


def middle_nll(
    model: torch.nn.Module, tokenizer, holes: Sequence[Hole], how: str, mode: str = "psm"
) -> torch.Tensor:
    """Negative log-likelihood (nats) of each hole's true middle, summed over its tokens.

    ``how="fim"``: the model reads the FIM prompt (prefix and suffix, order ``mode``) and
    then the middle; ``"l2r"``: the prefix alone, then the middle. The ``<EOT>`` after a FIM
    middle is not counted, so both score exactly the middle's characters. Uses
    :func:`gptlib.evaluate.continuation_logprobs` (eval mode, no gradients). A context longer
    than the model's window loses its left end (the part farthest from the hole).
    """
    from gptlib.evaluate import continuation_logprobs

    limit = model.config.block_size
    prefixes, middles = [], []
    for hole in holes:
        if not hole.middle:
            raise ValueError("a hole with an empty middle has no likelihood to measure.")
        mid = tokenizer.encode(hole.middle)
        ctx = tokenizer.encode(_context(hole, how, mode))
        keep = limit + 1 - len(mid)
        if keep < 1:
            raise ValueError(
                f"a middle of {len(mid)} tokens does not fit the model's context of {limit}."
            )
        prefixes.append(ctx[-keep:])
        middles.append(mid)
    return -continuation_logprobs(model, prefixes, middles, reduce="sum")


def held_out_tasks(n: int, seed: int, train_n: int, train_seed: int = 0):
    """``n`` functions drawn with ``seed`` that are not among the ``train_n`` training ones."""
    if seed == train_seed:
        raise ValueError(f"seed {seed} is the training seed: held-out functions need another.")
    train = {t.source for t in function_corpus(train_n, train_seed)}
    return function_corpus(n, seed, exclude=train)


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and a normal 95% confidence interval of the mean."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def compare_infilling(
    n: int = 200,
    seed: int = 1,
    *,
    kind: str = "bind",
    mode: str = "spm",
    models: dict[str, Any] | None = None,
    tokenizer=None,
    device: str | torch.device | None = None,
    train_n: int | None = None,
) -> dict[str, Any]:
    """Middle NLL of the FIM model (prefix and suffix) against the L2R model (prefix only).

    On ``n`` fresh functions (generator ``seed``, excluding the training functions), cut a
    hole of ``kind`` (default ``"bind"``: the line that binds a name from a pool of 200 that
    the suffix uses) and score the whole true middle with :func:`middle_nll`. Returns
    ``{"fim": mean NLL, "l2r": mean NLL, "gap": l2r - fim, "gap_ci95": (lo, hi), "n": n,
    "per_middle": {"fim": [...], "l2r": [...]}, ...}`` (nats per middle, summed over its
    tokens). Without ``models`` it loads the shipped assets ``fim/fim`` and ``fim/l2r``.
    ``mode`` is the FIM prompt order: the shipped model, trained on both, infills in SPM
    order (in PSM it must find the end of the prefix across the whole suffix, which it has
    not learned at this size).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 (a mean and its interval), got {n}.")
    if models is None:
        from gptlib import assets

        loaded = {how: assets.load(f"fim/{how}", device=device) for how in ("fim", "l2r")}
        models = {how: a.model for how, a in loaded.items()}
        tokenizer = loaded["fim"].tokenizer
        train_n = train_n or loaded["fim"].meta["settings"]["n_train"]
    tokenizer = tokenizer or fim_tokenizer()
    if train_n is None:
        raise ValueError("pass train_n= (how many training functions to exclude) with models=.")
    rng = random.Random(seed)
    holes = [make_hole(t, kind, rng) for t in held_out_tasks(n, seed, train_n)]
    nll = {
        "fim": middle_nll(models["fim"], tokenizer, holes, "fim", mode).tolist(),
        "l2r": middle_nll(models["l2r"], tokenizer, holes, "l2r").tolist(),
    }
    gap, lo, hi = _mean_ci([b - a for a, b in zip(nll["fim"], nll["l2r"])])
    chars = sum(len(h.middle) for h in holes) / n
    return {
        "fim": sum(nll["fim"]) / n,
        "l2r": sum(nll["l2r"]) / n,
        "gap": gap,
        "gap_ci95": (lo, hi),
        "n": n,
        "seed": seed,
        "kind": kind,
        "mode": mode,
        "chars_per_middle": chars,
        "per_middle": nll,
    }


def pass_rate(
    model: torch.nn.Module,
    tokenizer,
    tasks,
    how: str,
    *,
    kind: str = "bind",
    mode: str = "psm",
    seed: int = 0,
    greedy: bool = True,
    temperature: float = 1.0,
    execute_many: Callable[[list[str]], list[Any]] | None = None,
    fills: list[str] | None = None,
) -> float:
    """Share of ``tasks`` whose function, with the model's fill in a ``kind`` hole, passes.

    ``how="fim"`` fills with :func:`infill`; ``"l2r"`` with :func:`complete_lines` (told the
    number of lines). Sampling (``greedy=False``) draws from ``torch.Generator`` seeded with
    ``seed``. Programs run in ``execute_many`` (default :func:`gptlib.sandbox.execute_many`,
    separate processes with time and memory limits). Pass a list as ``fills`` to get the fills.
    """
    if execute_many is None:
        from gptlib.sandbox import execute_many as run

        def execute_many(programs):
            return run(programs, timeout=5.0, progress=False)

    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    rng = random.Random(seed)
    programs = []
    for task in tasks:
        hole = make_hole(task, kind, rng)
        if how == "fim":
            fill = infill(
                model,
                tokenizer,
                hole.prefix,
                hole.suffix,
                4 * len(hole.middle) + 20,
                mode=mode,
                greedy=greedy,
                temperature=temperature,
                generator=gen,
            )
        elif how == "l2r":
            fill = complete_lines(
                model,
                tokenizer,
                hole.prefix,
                hole.n_lines,
                4 * len(hole.middle) + 20,
                greedy=greedy,
                temperature=temperature,
                generator=gen,
            )
        else:
            raise ValueError(f"how must be 'fim' or 'l2r', got {how!r}.")
        if fills is not None:
            fills.append(fill)
        programs.append(hole.filled(fill) + "\n" + "\n".join(task.tests) + "\n")
    results = execute_many(programs)
    return sum(bool(r.passed) for r in results) / max(1, len(results))


@dataclass
class BestOfM:
    """The best-of-m left-to-right fill of one hole, and what it cost."""

    fill: str
    candidates: list[str]
    scores: list[float]  # log p(middle + suffix | prefix) of each candidate, nats
    generated_tokens: int  # tokens sampled (m candidates)
    scored_tokens: int  # tokens read to score them (middle + suffix, m times)
    seconds: float


def sample_middles(
    model: torch.nn.Module,
    tokenizer,
    prefix: str,
    n_lines: int,
    m: int,
    *,
    max_new_tokens: int = 60,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """``m`` left-to-right samples of the ``n_lines`` lines after ``prefix`` (one batch)."""
    from gptlib.sampling import generate

    device = next(model.parameters()).device
    ids = tokenizer.encode(EOT + prefix)[-(model.config.block_size - max_new_tokens) :]
    x = torch.tensor([ids] * m, dtype=torch.long, device=device)
    with torch.no_grad():
        out = generate(model, x, max_new_tokens, temperature=temperature, generator=generator)
    middles = []
    for row in out[:, len(ids) :].tolist():
        text = tokenizer.decode(row).split(EOT)[0]
        lines = text.split("\n")
        middles.append("\n".join(lines[:n_lines]) + "\n" if len(lines) > n_lines else text)
    return middles


def best_of_m(
    model: torch.nn.Module,
    tokenizer,
    hole: Hole,
    m: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
) -> BestOfM:
    """The best a left-to-right model can do with the suffix: sample ``m``, keep the likeliest file.

    Draw ``m`` middles from ``p(middle | prefix)``, score each whole file
    ``log p(middle + suffix | prefix)`` (the prefix's own probability is the same for all)
    and keep the best (a suffix too long for the model's window loses its end). The suffix
    is used only to *rank*: a right middle that is never
    sampled cannot win, so with a pool of 200 names about ``m / 200`` of the holes can be
    filled right; and the cost is ``m`` samples plus ``m`` scorings of the suffix.
    """
    from gptlib.evaluate import continuation_logprobs

    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}.")
    start = time.perf_counter()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    cands = sample_middles(
        model,
        tokenizer,
        hole.prefix,
        hole.n_lines,
        m,
        max_new_tokens=max(20, 3 * len(hole.middle)),
        temperature=temperature,
        generator=gen,
    )
    prefix_ids = tokenizer.encode(EOT + hole.prefix)
    block = model.config.block_size
    longest = max(len(tokenizer.encode(c)) for c in cands)
    # the suffix's end goes first if the window is too short (the same part for every candidate)
    suffix = tokenizer.decode(tokenizer.encode(hole.suffix)[: max(0, block - 1 - longest)])
    conts = [tokenizer.encode(c + suffix) for c in cands]
    keep = block + 1 - max(len(c) for c in conts)
    scores = continuation_logprobs(model, [prefix_ids[-keep:]] * m, conts).tolist()
    best = max(range(m), key=lambda i: scores[i])
    return BestOfM(
        cands[best],
        cands,
        scores,
        generated_tokens=m * max(20, 3 * len(hole.middle)),
        scored_tokens=sum(map(len, conts)),
        seconds=time.perf_counter() - start,
    )


def left_to_right_loss(
    model: torch.nn.Module, tokenizer, docs: Sequence[str], *, skip_first: bool = False
) -> float:
    """The ordinary next-token loss (nats per token) on plain documents: FIM-for-free's yardstick.

    The documents are joined as in training (each after an ``<EOT>``) and read in
    consecutive, non-overlapping windows of the model's context, all of them, so two models
    are scored on exactly the same tokens. Uses :func:`gptlib.evaluate.heldout_loss`.
    ``skip_first=True`` leaves out each document's first token (the one after ``<EOT>``):
    a FIM-trained model cannot be sure of it, since a document may also begin with a
    sentinel, so this part of the FIM tax is certain and separate from the rest.
    """
    from gptlib.evaluate import heldout_loss

    block = model.config.block_size
    ids = build_stream(docs, tokenizer, rate=0.0).long()
    n = (ids.numel() - 1) // block
    if n < 1:
        raise ValueError(f"need more than {block} tokens of documents, got {ids.numel()}.")
    x = ids[: n * block].view(n, block)
    y = ids[1 : n * block + 1].view(n, block).clone()
    if skip_first:
        y[x == tokenizer.encode(EOT)[0]] = -100  # lm_loss's ignore_index
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]
    # heldout_loss averages batch means; weight them by their scored tokens so each counts once
    weights = [int((b[1] != -100).sum()) for b in batches]
    total = sum(heldout_loss(model, [b]) * w for b, w in zip(batches, weights))
    return total / sum(weights)
