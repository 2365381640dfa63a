"""Over-optimisation over a sample pool: best-of-n and KL-regularised weights, exact KL, Gao's
forms, proxies from comparisons; the correction dialogues of chapter 14."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from gptlib.rlhf.dialogue import (
    admits_mistake,
    correction_demonstration,
    correction_dialogues,
    follow_up_dialogues,
)
from gptlib.rlhf.overoptimisation import (
    best_of_n_kl_bound,
    best_of_n_weights,
    fit_gao,
    fit_proxy,
    gao_form,
    gao_peak,
    kl_regularised_weights,
    labelled_pairs,
    pool_curve,
    pool_groups,
    pool_kl,
    proxy_ensemble,
)
from gptlib.rlhf.world import ToyWorld


def test_best_of_n_weights_match_enumeration():
    N, n = 6, 3
    counts = torch.zeros(N, dtype=torch.float64)
    for subset in itertools.combinations(range(N), n):
        counts[max(subset)] += 1
    assert torch.allclose(best_of_n_weights(n, N), counts / counts.sum())
    counts = torch.zeros(N, dtype=torch.float64)
    for draw in itertools.product(range(N), repeat=n):
        counts[max(draw)] += 1
    assert torch.allclose(best_of_n_weights(n, N, replace=True), counts / counts.sum())
    with pytest.raises(ValueError, match="1 <= n <= pool"):
        best_of_n_weights(7, 6)


def test_exact_kl_is_below_the_bound_and_reaches_log_pool():
    N = 64
    for n in (2, 8, 32):
        w = best_of_n_weights(n, N, replace=True).unsqueeze(0)
        kl = float(pool_kl(w))
        assert 0 < kl <= best_of_n_kl_bound(n) + 1e-9
    assert math.isclose(float(pool_kl(best_of_n_weights(N, N).unsqueeze(0))), math.log(N))
    big = float(pool_kl(best_of_n_weights(10_000, N, replace=True).unsqueeze(0)))
    assert math.isclose(big, math.log(N), rel_tol=1e-6)


def test_identical_answers_are_one_answer():
    # two copies of the top answer (probability 1/2): best-of-2 of the pool picks it unless
    # both draws miss it (1/4), then "b" unless both are "a" (1/16)
    responses = [["a", "b", "top", "top"]]
    groups = pool_groups(responses)
    assert groups.tolist() == [[0, 1, 2, 2]]
    proxy = torch.tensor([[0.0, 1.0, 2.0, 2.0]])
    gold = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    c = pool_curve(proxy, gold, ns=[2], groups=groups)
    p_top, p_b, p_a = 3 / 4, 3 / 16, 1 / 16
    expected = (
        p_top * math.log(p_top / 0.5) + p_b * math.log(p_b / 0.25) + p_a * math.log(p_a / 0.25)
    )
    assert math.isclose(c["kl"][0], expected, rel_tol=1e-9)
    # the gold reward: the unbiased estimator (pairs without replacement: 5 of 6 hold a "top")
    assert math.isclose(c["gold"][0], 5 / 6, rel_tol=1e-9)
    # without merging the copies, the KL is overstated
    assert pool_curve(proxy, gold, ns=[2])["kl"][0] > expected


def test_kl_regularised_optimum_moves_from_the_pool_to_the_best():
    proxy = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    gold = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 0.0]])
    c = pool_curve(proxy, gold, betas=[1e6, 1.0, 1e-3])
    assert c["kl"][0] < 1e-9 and math.isclose(c["kl"][-1], math.log(3), rel_tol=1e-6)
    assert c["proxy"] == sorted(c["proxy"])
    assert math.isclose(c["gold"][-1], 1.0, rel_tol=1e-6)
    w = kl_regularised_weights(proxy, 1.0)
    assert torch.allclose(w.sum(1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="either ns"):
        pool_curve(proxy, gold)


def test_gao_fits_recover_their_parameters():
    kl = [0.0, 0.2, 0.6, 1.2, 2.0, 3.0, 4.0]
    for form, (a, b) in (("bon", (0.3, 0.12)), ("rl", (0.2, 0.1))):
        gain = gao_form(torch.tensor(kl).sqrt(), a, b, form).tolist()
        alpha, beta = fit_gao(kl, gain, form)
        assert math.isclose(alpha, a, rel_tol=1e-6) and math.isclose(beta, b, rel_tol=1e-6)
    assert math.isclose(gao_peak(0.3, 0.12, "bon"), (0.3 / 0.24) ** 2)
    assert math.isclose(gao_peak(0.2, 0.1, "rl"), math.exp(2.0))
    assert gao_peak(0.3, -0.1, "bon") == math.inf
    with pytest.raises(ValueError, match="form must be"):
        fit_gao(kl, kl, "ppo")


def test_proxies_learn_the_labellers_order():
    world = ToyWorld(0)
    prompts = world.prompts("train", 40, seed=0)
    responses = [world.candidates(p, 5) for p in prompts]
    pairs = labelled_pairs(world, prompts, responses)
    assert len(pairs) == 40 * 10
    flat = [r for row in responses for r in row]
    flat_p = [p for p, row in zip(prompts, responses) for _ in row]
    for w, lo in pairs[:50]:
        assert world.gold_reward(flat_p[w], flat[w]) >= world.gold_reward(flat_p[lo], flat[lo])
    # features: the gold reward itself plus noise; the proxy must order pairs by it
    g = torch.Generator().manual_seed(0)
    gold = torch.tensor([world.gold_reward(p, r) for p, r in zip(flat_p, flat)])
    feats = torch.stack([gold, torch.randn(len(flat), generator=g)], 1)
    head = fit_proxy(feats, pairs)
    with torch.no_grad():
        s = head(feats).squeeze(-1)
    assert abs(float(s.mean())) < 1e-4 and math.isclose(float(s.std()), 1.0, rel_tol=1e-4)
    acc = sum(float(s[w] > s[lo]) for w, lo in pairs) / len(pairs)
    assert acc > 0.9
    members = proxy_ensemble(feats, pairs, 4)
    assert len(members) == 4
    assert not torch.equal(members[0].weight, members[1].weight)
    with pytest.raises(ValueError, match="at least one"):
        fit_proxy(feats, [])


def test_correction_dialogues():
    world = ToyWorld(0)
    items = correction_dialogues(world, "test", 10, seed=1)
    assert len(items) == 10
    for text, p in items:
        assert text.count("User: ") == 2 and text.endswith("Assistant: ")
        assert p.premise != p.answer and f"Assistant: {p.premise}." in text
        assert admits_mistake(p, correction_demonstration(p))
        assert world.gold_reward(p, correction_demonstration(p)) > 0.6
        assert not admits_mistake(p, p.premise + ".")
        assert world.gold_reward(p, p.premise + ".") < 0.05
    kept = correction_dialogues(world, "test", 5, seed=1, wrong_share=0.0)
    assert all(p.premise == p.answer for _, p in kept)
    assert all(admits_mistake(p, correction_demonstration(p)) for _, p in kept)
    # the same call gives the same dialogues
    assert correction_dialogues(world, "test", 10, seed=1) == items
    with pytest.raises(ValueError, match="wrong_share"):
        correction_dialogues(world, "test", 3, wrong_share=2)


def test_follow_up_dialogues():
    world = ToyWorld(0)
    items = follow_up_dialogues(world, 6, seed=1)
    assert items == follow_up_dialogues(world, 6, seed=1)
    for text, p in items:
        assert text.endswith(f"User: What about {p.entity}?\nAssistant: ")
        assert p.answer == world.capital[p.entity]
        assert world.gold_reward(p, world.demonstration(p)) > 0.9


def test_trained_policy_measurement_on_the_sft_model():
    from gptlib import assets
    from gptlib.rlhf.overoptimisation import (
        head_from_state,
        head_state,
        policy_point,
        proxy_reward_fn,
    )
    from gptlib.rlhf.reward import response_features

    torch.manual_seed(0)
    sft = assets.load("rlhf/sft")
    model, tok = sft.model.eval(), sft.tokenizer
    head = torch.nn.Linear(model.config.n_embd, 1)
    again = head_from_state(head_state(head))
    assert torch.equal(again.weight, head.weight) and torch.equal(again.bias, head.bias)
    world = ToyWorld(0)
    prompts = world.prompts("test", 3, seed=0)
    reward_fn = proxy_reward_fn(model, tok, head)
    texts, replies = [p.formatted for p in prompts], ["Yes.\n", "I don't know.\n", "Paris"]
    with torch.no_grad():
        expected = head(response_features(model, tok, texts, replies)).squeeze(-1)
    assert torch.allclose(reward_fn(texts, replies), expected)
    # the policy is its reference: every sampled response has log-ratio 0, so KL is exactly 0
    pt = policy_point(model, model, tok, world, prompts, reward_fn, samples=2, max_new_tokens=8)
    assert pt["kl"] == 0.0 and 0.0 <= pt["gold"] <= 1.0 and len(pt["per_prompt_gold"]) == 3
    # the same seed draws the same responses (common random numbers across checkpoints)
    assert (
        policy_point(model, model, tok, world, prompts, reward_fn, samples=2, max_new_tokens=8)
        == pt
    )
    # a perturbed policy has a positive KL estimate on average over enough samples
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.add_(0.5 * torch.randn_like(other.lm_head.weight))
    moved = policy_point(other, model, tok, world, prompts, reward_fn, samples=8, max_new_tokens=8)
    assert moved["kl"] > 0.1
    with pytest.raises(ValueError, match="samples >= 1"):
        policy_point(model, model, tok, world, prompts, reward_fn, samples=0)
    with pytest.raises(ValueError, match="one output"):
        head_state(torch.nn.Linear(4, 2))
