"""Held-out comparison of policies: bootstrap intervals, win rates, best-of-n, sampled rankings."""
import pytest
import torch

from gptlib.model import GPT, GPTConfig
from gptlib.rlhf.evaluation import best_of_n, paired_bootstrap, sample_gold, win_rate_of
from gptlib.rlhf.reward import sample_comparisons
from gptlib.rlhf.world import ToyWorld, make_tokenizer


def test_paired_bootstrap_of_a_constant_difference_is_that_constant():
    a = torch.linspace(0, 1, 50)
    diff, lo, hi = paired_bootstrap(a + 0.25, a)
    assert diff == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_paired_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_prompts():
    g = torch.Generator().manual_seed(0)
    small = torch.randn(40, generator=g) + 0.1
    large = torch.randn(4000, generator=g) + 0.1
    d1, lo1, hi1 = paired_bootstrap(small, torch.zeros(40))
    d2, lo2, hi2 = paired_bootstrap(large, torch.zeros(4000))
    assert lo1 < d1 < hi1 and lo2 < d2 < hi2
    assert hi2 - lo2 < (hi1 - lo1) / 5  # ~ 1/sqrt(n): 10x the width for 100x fewer prompts
    # the normal-theory half-width 1.96 * sd / sqrt(n) agrees with the bootstrap's
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 * float(large.std()) / 4000 ** 0.5, rel=0.15)
    same = paired_bootstrap(small, torch.zeros(40), seed=0)
    other = paired_bootstrap(small, torch.zeros(40), seed=1)
    assert same == (d1, lo1, hi1) and other[1:] != same[1:]
    with pytest.raises(ValueError, match="one score per prompt"):
        paired_bootstrap(torch.zeros(3), torch.zeros(4))


def test_win_rate_counts_ties_as_half():
    assert win_rate_of([1.0, 0.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.1]) == pytest.approx(2.5 / 4)


def test_best_of_n_picks_by_the_proxy_and_the_oracle_is_an_upper_bound():
    gold = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]], dtype=torch.float64)
    proxy = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert best_of_n(gold, proxy, 1).tolist() == [0.1, 0.7]
    assert best_of_n(gold, proxy, 3).tolist() == [0.1, 0.2]  # a misled proxy
    assert best_of_n(gold, None, 3).tolist() == [0.9, 0.7]
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(gold, proxy, 4)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    tok = make_tokenizer()
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2,
                         n_embd=32)), tok


def test_sample_gold_is_reproducible_from_its_seed(policy):
    model, tok = policy
    world = ToyWorld(0)
    prompts = world.prompts("test", 4, seed=0)
    r1, g1 = sample_gold(model, tok, world, prompts, n_samples=2, seed=3, max_new_tokens=8)
    r2, g2 = sample_gold(model, tok, world, prompts, n_samples=2, seed=3, max_new_tokens=8)
    r3, _ = sample_gold(model, tok, world, prompts, n_samples=2, seed=4, max_new_tokens=8)
    assert r1 == r2 and torch.equal(g1, g2) and r1 != r3
    assert g1.shape == (4, 2)
    assert g1[0, 1] == world.gold_reward(prompts[0], r1[0][1])


def test_sampled_comparisons_rank_distinct_replies_by_gold_without_noise(policy):
    model, tok = policy
    world = ToyWorld(0)
    prompts = world.prompts("train", 5, seed=0)
    comps = sample_comparisons(world, model, tok, prompts, 4, extra_candidates=2,
                               max_new_tokens=8, seed=0)
    assert comps
    for c in comps:
        assert len(set(c.responses)) == len(c.responses) >= 2
        gold = [world.gold_reward(c.prompt, c.responses[i]) for i in c.ranking]
        assert gold == sorted(gold, reverse=True)
