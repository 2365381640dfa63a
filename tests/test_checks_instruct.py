"""Checkers of chapters 11 and 12 (gptlib.checks.instruct): each accepts a correct answer, rejects
a wrong one with a message that names the mistake, and gives a hint for an unfinished one."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlib import assets
from gptlib.checks import (
    CheckFailed,
    check_accuracy_by_gap,
    check_capital_recall,
    check_margin_loss,
    check_normalised_reward,
    check_prompt_loss_after_sft,
)
from gptlib.rlhf.sft import generate_responses
from gptlib.rlhf.world import ToyWorld, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only waits


@pytest.fixture(scope="module")
def world():
    return ToyWorld(0)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def models():
    return {name: assets.load(f"rlhf/{name}").model for name in ("base", "sft")}


# ----------------------------------------------------------------------------- chapter 11


def split_loss(model, prompt_ids, response_ids):
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    nll = F.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:], reduction="none")
    n = len(prompt_ids)
    return nll[: n - 1].mean().item(), nll[n - 1 :].mean().item()


def test_prompt_loss_accepts_a_correct_function_and_the_right_guess(models, tokenizer, world):
    msg = check_prompt_loss_after_sft(
        split_loss, lambda: "up", models["base"], models["sft"], tokenizer, world
    )
    assert "prediction 'up' was right" in msg and "prompt loss" in msg


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda m, p, r: split_loss(m, p, r)[::-1], "swapped"),
        (
            lambda m, p, r: tuple(v * n for v, n in zip(split_loss(m, p, r), (len(p) - 1, len(r)))),
            "sums over characters",
        ),
        (lambda m, p, r: split_loss(m, list(p) + list(r)[:1], list(r)[1:]), "first response"),
        (lambda m, p, r: (0.0, split_loss(m, p, r)[1]), r"prompt_loss, response_loss"),
        (lambda m, p, r: split_loss(m, p, r)[0], "expected a pair"),
    ],
)
def test_prompt_loss_names_the_mistake(models, tokenizer, world, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_prompt_loss_after_sft(wrong, "up", models["base"], models["sft"], tokenizer, world)


def test_prompt_loss_says_when_the_guess_is_wrong(models, tokenizer, world):
    with pytest.raises(CheckFailed, match="you predicted 'same', the measurement says 'up'"):
        check_prompt_loss_after_sft(
            split_loss, "same", models["base"], models["sft"], tokenizer, world
        )
    with pytest.raises(CheckFailed, match="write 'up' or 'same' or 'down'"):
        check_prompt_loss_after_sft(
            split_loss, "higher", models["base"], models["sft"], tokenizer, world
        )


def test_unfinished_answers_get_hints(models, tokenizer, world):
    def stub(model, prompt_ids, response_ids):
        raise NotImplementedError()

    def guess_stub():
        raise NotImplementedError()

    args = (models["base"], models["sft"], tokenizer, world)
    with pytest.raises(CheckFailed, match="not written yet"):
        check_prompt_loss_after_sft(stub, "up", *args)
    with pytest.raises(CheckFailed, match="not written yet"):
        check_prompt_loss_after_sft(split_loss, guess_stub, *args)
    with pytest.raises(CheckFailed, match="`split_loss_not_written` is not defined yet"):
        check_prompt_loss_after_sft("split_loss_not_written", "up", *args)
    with pytest.raises(CheckFailed, match="`recall_not_written` is not defined yet"):
        check_capital_recall("recall_not_written", "sentence", models["base"], tokenizer, world)
    with pytest.raises(CheckFailed, match="`margin_not_written` is not defined yet"):
        check_margin_loss("margin_not_written", models["sft"], tokenizer, world)
    with pytest.raises(CheckFailed, match="not written yet"):
        check_accuracy_by_gap(lambda s, g, t: stub(s, g, t), "far", [], [], [])
    with pytest.raises(CheckFailed, match="`normalise_not_written` is not defined yet"):
        check_normalised_reward("normalise_not_written", lambda p, r: torch.zeros(len(r)), world)


def capital_recall(model, tokenizer, world, template):
    prompts = [template.format(x=land) for land in world.known]
    outs = generate_responses(model, tokenizer, prompts, max_new_tokens=40, greedy=True)
    return sum(world.capital[x] in o for x, o in zip(world.known, outs)) / len(world.known)


def test_capital_recall(models, tokenizer, world):
    msg = check_capital_recall(capital_recall, "sentence", models["base"], tokenizer, world)
    assert "prediction 'sentence' was right" in msg
    with pytest.raises(CheckFailed, match="you predicted 'assistant', the measurement says"):
        check_capital_recall(capital_recall, "assistant", models["base"], tokenizer, world)
    with pytest.raises(CheckFailed, match="a count, not a share"):
        check_capital_recall(
            lambda m, t, w, tpl: capital_recall(m, t, w, tpl) * len(w.known),
            "sentence",
            models["base"],
            tokenizer,
            world,
        )
    with pytest.raises(CheckFailed, match="greedy decoding of 40 characters finds the capital"):
        check_capital_recall(lambda m, t, w, tpl: 0.5, "sentence", models["base"], tokenizer, world)


# ----------------------------------------------------------------------------- chapter 12


def margin_loss(r_win, r_lose, margin):
    return -F.logsigmoid(r_win - r_lose - margin).mean()


def test_margin_loss_accepts_a_correct_loss_and_reports_the_measurement(models, tokenizer, world):
    msg = check_margin_loss(margin_loss, models["sft"], tokenizer, world)
    assert "margin loss: correct" in msg and "held-out accuracy" in msg


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda w, lo, m: -F.logsigmoid(w - lo + m).mean(), "makes it easier"),
        (lambda w, lo, m: -F.logsigmoid(w - lo).mean(), "margin loss with margin 1.0"),
        (lambda w, lo, m: -F.logsigmoid(w - lo - m).sum(), "margin loss with margin 0.0"),
        (lambda w, lo, m: -F.logsigmoid(w - lo - m), "expected the mean over pairs"),
        (lambda w, lo, m: -torch.log(torch.sigmoid(w - lo - m)).mean(), "inf for a gap"),
    ],
)
def test_margin_loss_names_the_mistake(models, tokenizer, world, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_margin_loss(wrong, models["sft"], tokenizer, world)


def accuracy_by_gap(scores, golds, threshold):
    right = {True: [], False: []}
    for s, g in zip(scores, golds):
        for a, b in itertools.combinations(range(len(g)), 2):
            if g[a] != g[b]:
                right[abs(g[a] - g[b]) < threshold].append((s[a] > s[b]) == (g[a] > g[b]))
    return float(np.mean(right[True])), float(np.mean(right[False]))


@pytest.fixture(scope="module")
def noisy_scores():
    """A reward model = gold + noise: close pairs are the ones it gets wrong."""
    rng = np.random.default_rng(0)
    golds = rng.uniform(0, 1, size=(50, 6)).round(2)
    golds[:, 1] = golds[:, 0]  # a tie in every prompt
    scores = golds + rng.normal(0, 0.15, size=golds.shape)
    comparisons = [SimpleNamespace(responses=[""] * 6) for _ in range(50)]
    return comparisons, scores.ravel(), golds.ravel()


def test_accuracy_by_gap(noisy_scores):
    comparisons, scores, golds = noisy_scores
    msg = check_accuracy_by_gap(accuracy_by_gap, "far", comparisons, scores, golds)
    assert "prediction 'far' was right" in msg
    with pytest.raises(CheckFailed, match="you predicted 'close', the measurement says 'far'"):
        check_accuracy_by_gap(accuracy_by_gap, "close", comparisons, scores, golds)

    def with_ties(s_all, g_all, threshold):
        right = {True: [], False: []}
        for s, g in zip(s_all, g_all):
            for a, b in itertools.combinations(range(len(g)), 2):
                right[abs(g[a] - g[b]) < threshold].append((s[a] > s[b]) == (g[a] > g[b]))
        return float(np.mean(right[True])), float(np.mean(right[False]))

    with pytest.raises(CheckFailed, match="pairs whose gold rewards tie"):
        check_accuracy_by_gap(with_ties, "far", comparisons, scores, golds)
    with pytest.raises(CheckFailed, match=r"\(acc_close, acc_far\) at threshold"):
        check_accuracy_by_gap(
            lambda s, g, t: accuracy_by_gap(s, g, t)[::-1], "far", comparisons, scores, golds
        )


def length_reward(prompts, responses):
    """A stand-in reward model (deterministic, cheap): longer answers score higher."""
    return torch.tensor([len(r) / 10 for r in responses])


def normalise(reward_fn, prompts, demonstrations):
    offset = reward_fn(prompts, demonstrations).mean()
    return lambda ps, rs: reward_fn(ps, rs) - offset


def test_normalised_reward(world):
    assert "correct" in check_normalised_reward(normalise, length_reward, world)
    with pytest.raises(CheckFailed, match="expected a reward function"):
        check_normalised_reward(lambda rf, p, d: rf(p, d) - rf(p, d).mean(), length_reward, world)

    def standardise(rf, prompts, demos):
        s = rf(prompts, demos)
        return lambda ps, rs: (rf(ps, rs) - s.mean()) / s.std()

    with pytest.raises(CheckFailed, match="changes the differences between answers"):
        check_normalised_reward(standardise, length_reward, world)
    with pytest.raises(CheckFailed, match="score .* on average under your reward, expected 0"):
        check_normalised_reward(
            lambda rf, p, d: lambda ps, rs: rf(ps, rs) - 1.0, length_reward, world
        )
    fixed = normalise(length_reward, *_demos(world))
    with pytest.raises(CheckFailed, match="demonstrations score"):
        check_normalised_reward(lambda rf, p, d: fixed, length_reward, world)


def _demos(world):
    prompts = world.prompts("val", 10, seed=random.Random(0).randint(0, 99))
    return prompts, [world.demonstration(p) for p in prompts]
