"""Exercise checkers for chapters 11 and 12 that measure behaviour, not re-typed code.

- :func:`check_prompt_loss_after_sft`: predict, then measure what SFT (the loss on the
  response only) does to the loss on the *prompt* characters;
- :func:`check_capital_recall`: predict, then measure whether the base model knows the capitals
  it fails to give as an assistant;
- :func:`check_margin_loss`: extend the reward loss with a margin; trained reward heads show what
  it changes (the gap between winner and loser) and what it does not (held-out accuracy);
- :func:`check_accuracy_by_gap`: predict, then measure on which pairs a reward model is right
  more often: pairs whose gold rewards are close or far apart;
- :func:`check_normalised_reward`: shift a reward model so that the labellers' demonstrations
  score 0 on average, as InstructGPT did before reinforcement learning.

Each checker takes the reader's answer first (a function, or its name as a string), then the
models and data of the chapter, so it measures on the same objects the reader has.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gptlib.checks import _fail, check_close, checker

__all__ = [
    "check_prompt_loss_after_sft",
    "check_capital_recall",
    "check_margin_loss",
    "check_accuracy_by_gap",
    "check_normalised_reward",
]


class _Report(str):
    """A checker's message: a plain string, shown in a notebook wrapped to the page's width."""

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(textwrap.fill(self, 88))


def _prediction(prediction, allowed: Sequence[str]) -> str:
    """A prediction is a string or a function returning one (so a student stub can raise)."""
    if callable(prediction):
        prediction = prediction()
    if prediction not in allowed:
        choices = " or ".join(repr(a) for a in allowed)
        _fail(f"prediction is {prediction!r}; write {choices} (before you measure).")
    return prediction


def _number(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            _fail(f"{what} has shape {tuple(value.shape)}; expected one number.")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        _fail(f"{what} is {value!r}; expected a number.")
    return math.nan  # unreachable


# ----------------------------------------------------------------------------- chapter 11


@torch.no_grad()
def _split_loss_reference(model, prompt_ids, response_ids) -> tuple[float, float]:
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=_device(model))
    logits = model(ids[:, :-1])
    if isinstance(logits, tuple):
        logits = logits[0]
    nll = F.cross_entropy(logits[0].float(), ids[0, 1:], reduction="none")
    n_prompt = len(prompt_ids)
    return nll[: n_prompt - 1].mean().item(), nll[n_prompt - 1 :].mean().item()


def _device(model) -> torch.device:
    return next(model.parameters()).device


@checker
def check_prompt_loss_after_sft(
    fn: Callable, prediction, base, sft, tokenizer, world, n_dialogues: int = 40
) -> str:
    """Predict, then measure: what SFT does to the loss on the prompt characters.

    ``fn(model, prompt_ids, response_ids) -> (prompt_loss, response_loss)``: the mean
    next-token cross entropy (nats per character) over the prompt's characters (each predicted
    from the ones before it, the first has nothing to be predicted from) and over the response's
    characters (the first predicted from the last prompt position). ``prediction`` (or a
    function returning it) is ``"up"``, ``"same"`` or ``"down"``: how the mean prompt loss of
    held-out dialogues moves from the base model to the SFT model ("same": within 10%).
    """
    from gptlib.rlhf.sft import sft_examples

    guess = _prediction(prediction, ("up", "same", "down"))
    pairs = sft_examples(world, "test", n_dialogues, seed=1)
    encoded = [(tokenizer.encode(p), tokenizer.encode(r)) for p, r in pairs]
    means = {}
    for name, model in (("base", base), ("SFT", sft)):
        was_training = model.training
        model.eval()
        try:
            ref = []
            for p_ids, r_ids in encoded[:3]:  # the reader's function first: fail fast
                ref_p, ref_r = _split_loss_reference(model, p_ids, r_ids)
                ref.append((ref_p, ref_r))
                with torch.no_grad():
                    got = fn(model, list(p_ids), list(r_ids))
                if not isinstance(got, (tuple, list)) or len(got) != 2:
                    _fail(
                        f"split_loss returned {type(got).__name__}; expected a pair "
                        "(prompt_loss, response_loss)."
                    )
                got_p = _number(got[0], "prompt_loss")
                got_r = _number(got[1], "response_loss")
                _diagnose_split(model, p_ids, r_ids, got_p, got_r, ref_p, ref_r, name)
            ref += [_split_loss_reference(model, p, r) for p, r in encoded[3:]]
        finally:
            model.train(was_training)
        means[name] = [sum(v[i] for v in ref) / len(ref) for i in (0, 1)]
    before, after = means["base"][0], means["SFT"][0]
    measured = "up" if after > 1.1 * before else "down" if after < 0.9 * before else "same"
    report = (
        f"on {len(pairs)} held-out dialogues, prompt loss {before:.2f} -> {after:.2f} nats per "
        f"character, response loss {means['base'][1]:.2f} -> {means['SFT'][1]:.2f} "
        "(base -> SFT)"
    )
    if guess != measured:
        _fail(
            f"you predicted '{guess}', the measurement says '{measured}': {report}.",
            "the prompt tokens carry no loss in SFT, so nothing holds the model's prediction "
            "of them in place while the shared weights move towards answering.",
        )
    return _Report(f"split_loss is correct and your prediction '{guess}' was right: {report}.")


def _diagnose_split(model, p_ids, r_ids, got_p, got_r, ref_p, ref_r, name) -> None:
    if math.isclose(got_p, ref_r, abs_tol=1e-4) and math.isclose(got_r, ref_p, abs_tol=1e-4):
        _fail(
            "split_loss returns (response_loss, prompt_loss): the two are swapped.",
            "return the prompt's loss first.",
        )
    n_p, n_r = len(p_ids) - 1, len(r_ids)
    if math.isclose(got_r, ref_r * n_r, rel_tol=1e-3) or math.isclose(
        got_p, ref_p * n_p, rel_tol=1e-3
    ):
        _fail(
            "split_loss returns sums over characters, not means.",
            "divide by the number of characters of each part (or use .mean()).",
        )
    if math.isclose(got_r, ref_r / math.log(2), rel_tol=1e-3):
        _fail("split_loss is in bits; the book measures losses in nats.", "use the natural log.")
    with torch.no_grad():
        shifted = _split_loss_reference(model, list(p_ids) + list(r_ids)[:1], list(r_ids)[1:])
    if len(r_ids) > 1 and math.isclose(got_r, shifted[1], abs_tol=1e-4):
        _fail(
            "split_loss leaves out the first response character: it is predicted from the last "
            "prompt position and belongs to the response's loss.",
            "the response's targets are positions len(prompt) - 1 onwards of the shifted labels.",
        )
    check_close(
        torch.tensor([got_p, got_r]),
        torch.tensor([ref_p, ref_r]),
        f"(prompt_loss, response_loss) of the {name} model on a held-out dialogue",
        atol=1e-4,
        hint="logits = model(ids[:, :-1]); per-position cross entropy with ids[:, 1:]; the first "
        "len(prompt) - 1 positions are the prompt's, the rest the response's.",
    )


@torch.no_grad()
def _recall_reference(model, tokenizer, world, template: str) -> float:
    from gptlib.rlhf.sft import generate_responses

    lands = list(world.known)
    texts = [template.format(x=land) for land in lands]
    outs = generate_responses(model, tokenizer, texts, max_new_tokens=40, greedy=True)
    return sum(world.capital[land] in out for land, out in zip(lands, outs)) / len(lands)


SENTENCE = "The capital of {x} is"


@checker
def check_capital_recall(fn: Callable, prediction, model, tokenizer, world) -> str:
    """Predict, then measure: does the base model know the capitals it fails to give as an
    assistant?

    ``fn(model, tokenizer, world, template) -> float``: the share of the world's lands
    (``world.known``) whose capital appears in the greedy continuation (40 new characters,
    ``generate_responses(..., max_new_tokens=40, greedy=True)``) of ``template.format(x=land)``.
    ``prediction`` (or a function returning it) says which prompt recalls more capitals:
    ``"sentence"`` (``"The capital of {x} is"``) or ``"assistant"`` (the dialogue
    ``format_prompt(["What is the capital of {x}?"])``).
    """
    from gptlib.rlhf.world import format_prompt

    guess = _prediction(prediction, ("sentence", "assistant"))
    templates = {"sentence": SENTENCE, "assistant": format_prompt(["What is the capital of {x}?"])}
    measured = {}
    for form, template in templates.items():
        expected = _recall_reference(model, tokenizer, world, template)
        got = _number(fn(model, tokenizer, world, template), f"capital_recall for the {form}")
        if math.isclose(got, expected * len(world.known), abs_tol=1e-6) and expected > 0:
            _fail(
                f"capital_recall for the {form} is {got:g}: a count, not a share.",
                "divide by the number of lands.",
            )
        if abs(got - expected) > 1.5 / len(world.known):
            _fail(
                f"capital_recall for the {form} prompt {template!r} is {got:.2f}; greedy decoding "
                f"of 40 characters finds the capital for {expected:.2f} of the lands.",
                "for each land in world.known: template.format(x=land), "
                "generate_responses(model, tokenizer, prompts, max_new_tokens=40, greedy=True), "
                "then count world.capital[land] in the continuation.",
            )
        measured[form] = expected
    better = "sentence" if measured["sentence"] > measured["assistant"] else "assistant"
    report = (
        f"completing the sentence recalls {measured['sentence']:.0%} of the capitals, answering "
        f"as an assistant {measured['assistant']:.0%}"
    )
    if guess != better:
        _fail(
            f"you predicted '{guess}', the measurement says '{better}': {report}.",
            "the facts came from encyclopedia sentences; the dialogues of its web data taught "
            "other continuations for a question.",
        )
    return _Report(f"capital_recall is correct and your prediction '{guess}' was right: {report}.")


# ----------------------------------------------------------------------------- chapter 12


def _fit_head(features, win, lose, loss_fn, margin, iters: int = 150, seed: int = 0):
    """A linear reward head on frozen features (as ``fit_linear_reward``), any pairwise loss."""
    torch.manual_seed(seed)
    mu, sd = features.mean(0), features.std(0) + 1e-6
    x = (features - mu) / sd
    head = torch.nn.Linear(features.shape[1], 1)
    torch.nn.init.zeros_(head.weight)
    opt = torch.optim.AdamW(head.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(iters):
        r = head(x).squeeze(-1)
        loss = torch.as_tensor(loss_fn(r[win], r[lose], margin))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda f: head((f - mu) / sd).squeeze(-1).detach()


@checker
def check_margin_loss(fn: Callable, sft, tokenizer, world, margin: float = 2.0) -> str:
    """Extend the reward loss with a margin: ``fn(r_win, r_lose, margin)`` is the mean over pairs of
    ``-log sigmoid(r_win - r_lose - margin)``.

    After checking values (margin 0 is the plain loss; stable for large gaps), the checker fits
    two linear reward heads on the frozen SFT model's features of 30 training rankings (K = 4),
    with margin 0 and with ``margin``, and measures both on 20 held-out rankings: the margin must
    widen the mean gap between winners and losers and leave the held-out accuracy within 6
    points.
    """
    from gptlib.rlhf.reward import comparison_accuracy, make_comparisons, response_features

    g = torch.Generator().manual_seed(0)
    r_w, r_l = torch.randn(7, generator=g), torch.randn(7, generator=g)
    for m in (0.0, 1.0, 2.5):
        got = torch.as_tensor(fn(r_w.clone(), r_l.clone(), m)).float()
        if got.numel() != 1:
            _fail(f"margin loss returned shape {tuple(got.shape)}: expected the mean over pairs.")
        expected = -F.logsigmoid(r_w - r_l - m).mean()
        if m and torch.isclose(got.reshape(()), -F.logsigmoid(r_w - r_l + m).mean(), atol=1e-5):
            _fail(
                f"with margin {m} your loss is -log sigmoid(r_w - r_l + margin): the margin "
                "makes it easier, not harder.",
                "the winner must beat the loser *by* the margin: subtract it from r_w - r_l.",
            )
        check_close(
            got.reshape(()),
            expected,
            f"margin loss with margin {m}",
            atol=1e-5,
            hint="mean of -F.logsigmoid(r_win - r_lose - margin); margin 0 is the chapter's loss.",
        )
    big = torch.as_tensor(fn(torch.tensor([0.0]), torch.tensor([200.0]), 1.0)).float()
    if not torch.isfinite(big).all():
        _fail(
            "the margin loss is inf for a gap of -200.",
            "use F.logsigmoid(x), not torch.log(torch.sigmoid(x)).",
        )

    train = make_comparisons(world, "train", 30, k=4, seed=21)
    val = make_comparisons(world, "val", 20, k=4, seed=22)

    def features(comps):
        prompts = [c.prompt for c in comps for _ in c.responses]
        return response_features(sft, tokenizer, prompts, [r for c in comps for r in c.responses])

    f_train, f_val = features(train), features(val)
    win = torch.tensor([i * 4 + w for i, c in enumerate(train) for w, _ in c.pairs])
    lose = torch.tensor([i * 4 + lo for i, c in enumerate(train) for _, lo in c.pairs])
    rows = {}
    for m in (0.0, margin):
        score = _fit_head(f_train, win, lose, fn, m)
        r_train, r_val = score(f_train), score(f_val)
        acc = comparison_accuracy(lambda p, r, s=r_val: s, val, gold=world)
        rows[m] = (acc, (r_train[win] - r_train[lose]).mean().item())
    (acc0, gap0), (acc_m, gap_m) = rows[0.0], rows[margin]
    report = (
        f"mean training gap r_w - r_l {gap0:.2f} -> {gap_m:.2f}, held-out accuracy "
        f"{acc0:.1%} -> {acc_m:.1%} (margin 0 -> {margin:g})"
    )
    if not gap_m > gap0 + 0.25 * margin:
        _fail(
            f"trained with your loss, the margin does not widen the gap: {report}.",
            "the loss must keep pushing until r_w - r_l exceeds the margin.",
        )
    if abs(acc_m - acc0) > 0.06:
        _fail(
            f"the margin changed the held-out accuracy by more than 6 points: {report}.",
            "a constant margin should mostly rescale the rewards; check the loss on a batch "
            "with margin 0 against the chapter's rm_loss.",
        )
    return _Report(f"margin loss: correct; {report}.")


def _pair_accuracy(
    scores, golds, threshold: float, skip_ties: bool = True
) -> tuple[float, float, int, int]:
    close = far = n_close = n_far = 0
    for s, g in zip(scores, golds):
        for a, b in itertools.combinations(range(len(g)), 2):
            if skip_ties and g[a] == g[b]:
                continue
            right = (s[a] > s[b]) == (g[a] > g[b])
            if abs(g[a] - g[b]) < threshold:
                close, n_close = close + right, n_close + 1
            else:
                far, n_far = far + right, n_far + 1
    return close / max(n_close, 1), far / max(n_far, 1), n_close, n_far


@checker
def check_accuracy_by_gap(
    fn: Callable, prediction, comparisons, rewards, golds, threshold: float = 0.1
) -> str:
    """Predict, then measure: is a reward model right more often on close or on distant pairs?

    ``fn(scores, golds, threshold) -> (acc_close, acc_far)``: ``scores`` and ``golds`` are lists
    (one entry per prompt) of the reward model's and the gold rewards of that prompt's answers;
    over every pair of answers of a prompt whose gold rewards differ, the share the reward model
    orders like the gold reward, separately for gold gaps below ``threshold`` and the rest.
    ``comparisons`` with the flat arrays ``rewards`` and ``golds`` (every answer, in order) are
    the chapter's test data. ``prediction``: ``"close"`` or ``"far"``, where accuracy is higher.
    """
    guess = _prediction(prediction, ("close", "far"))
    scores_by, golds_by, start = [], [], 0
    for c in comparisons:
        k = len(c.responses)
        scores_by.append([float(v) for v in rewards[start : start + k]])
        golds_by.append([float(v) for v in golds[start : start + k]])
        start += k
    toy_s, toy_g = [[0.3, 0.1, 0.2], [2.0, 1.0]], [[0.9, 0.85, 0.1], [0.5, 0.5]]
    for s, gl, th in ((toy_s, toy_g, 0.1), (scores_by, golds_by, threshold)):
        got = fn([list(v) for v in s], [list(v) for v in gl], th)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            _fail(f"accuracy_by_gap returned {got!r}; expected a pair (acc_close, acc_far).")
        ref_close, ref_far, _, _ = _pair_accuracy(s, gl, th)
        got_close, got_far = _number(got[0], "acc_close"), _number(got[1], "acc_far")
        with_ties = _pair_accuracy(s, gl, th, skip_ties=False)[:2]
        if s is toy_s and all(
            math.isclose(a, b, abs_tol=1e-9) for a, b in zip((got_close, got_far), with_ties)
        ):
            _fail(
                "accuracy_by_gap counts pairs whose gold rewards tie (there is no right order).",
                "skip pairs with equal gold rewards.",
            )
        check_close(
            torch.tensor([got_close, got_far]),
            torch.tensor([ref_close, ref_far]),
            f"(acc_close, acc_far) at threshold {th}" + (" on the toy case" if s is toy_s else ""),
            atol=1e-6,
            hint="for every pair a < b of a prompt with golds[a] != golds[b]: right when "
            "(scores[a] > scores[b]) == (golds[a] > golds[b]); close when "
            "|golds[a] - golds[b]| < threshold.",
        )
    acc_close, acc_far, n_close, n_far = _pair_accuracy(scores_by, golds_by, threshold)
    measured = "far" if acc_far > acc_close else "close"
    report = (
        f"{acc_close:.1%} right on {n_close} pairs closer than {threshold:g} in gold reward, "
        f"{acc_far:.1%} on {n_far} pairs further apart"
    )
    if guess != measured:
        _fail(f"you predicted '{guess}', the measurement says '{measured}': {report}.")
    return _Report(f"accuracy_by_gap is correct and your prediction '{guess}' was right: {report}.")


@checker
def check_normalised_reward(fn: Callable, reward_fn: Callable, world, n: int = 24) -> str:
    """``fn(reward_fn, prompts, demonstrations) -> new_reward_fn``: the same reward model shifted
    so that the demonstrations of ``prompts`` score 0 on average (InstructGPT's normalisation
    before reinforcement learning). Differences between answers must not change."""
    import random

    def mean_score(rf, prompts, responses) -> float:
        return torch.as_tensor(rf(prompts, responses)).float().mean().item()

    shifts = []
    for seed in (1, 2):
        prompts = world.prompts("train", n, seed=seed)
        demos = [world.demonstration(p) for p in prompts]
        new_fn = fn(reward_fn, list(prompts), list(demos))
        if not callable(new_fn):
            _fail(
                f"normalise returned {type(new_fn).__name__}; expected a reward function "
                "new_fn(prompts, responses)."
            )
        after = mean_score(new_fn, prompts, demos)
        if abs(after) > 1e-3:
            _fail(
                f"the demonstrations score {after:+.4f} on average under your reward, expected 0.",
                "subtract the mean reward of the demonstrations from every reward.",
            )
        rng = random.Random(seed)
        others = world.prompts("val", 8, seed=seed)
        answers = [world.candidates(p, 2, rng) for p in others]
        ps = [p for p in others for _ in range(2)]
        rs = [a for pair in answers for a in pair]
        old = torch.as_tensor(reward_fn(ps, rs)).float().cpu()
        new = torch.as_tensor(new_fn(ps, rs)).float().cpu()
        if new.shape != old.shape:
            _fail(f"your reward returns shape {tuple(new.shape)} for {len(ps)} answers.")
        shift = old - new
        if (shift - shift.mean()).abs().max() > 1e-3:
            _fail(
                "your reward changes the differences between answers, not only their zero: "
                f"old - new ranges over [{shift.min():.3f}, {shift.max():.3f}].",
                "shift every reward by the same constant (do not rescale or clip).",
            )
        shifts.append(shift.mean().item())
    if abs(shifts[0] - shifts[1]) < 1e-6:
        _fail(
            "the shift is the same for two different sets of demonstrations: is it computed "
            "from the demonstrations you are given?"
        )
    return _Report(
        "normalised reward: correct; the demonstrations average 0 and every difference between "
        f"answers is kept (shifts of {shifts[0]:+.3f} and {shifts[1]:+.3f} on two sets)."
    )
