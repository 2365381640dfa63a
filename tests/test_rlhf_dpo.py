"""DPO: the loss equals a reference computation, and training widens the chosen-vs-rejected margin."""
import copy
import math

import pytest
import torch

from gptlib.model import GPT, GPTConfig
from gptlib.rlhf.dpo import dpo_loss, dpo_loss_reference, pairs_from_ranking, train_dpo
from gptlib.rlhf.sft import response_logprobs
from gptlib.tokenizer import CharTokenizer


def test_dpo_loss_matches_reference_and_implicit_rewards():
    g = torch.Generator().manual_seed(0)
    pw, pl, rw, rl = (torch.randn(6, generator=g) * 5 for _ in range(4))
    for beta in (0.05, 0.1, 1.0):
        loss, r_w, r_l = dpo_loss(pw, pl, rw, rl, beta)
        ref = sum(dpo_loss_reference(a, b, c, d, beta) for a, b, c, d in
                  zip(pw.tolist(), pl.tolist(), rw.tolist(), rl.tolist())) / 6
        assert abs(loss.item() - ref) < 1e-5
        torch.testing.assert_close(r_w, beta * (pw - rw))
        torch.testing.assert_close(r_l, beta * (pl - rl))
    # policy == reference: the loss is log 2 whatever beta is
    z = torch.zeros(3)
    assert abs(dpo_loss(z, z, z, z, 0.3)[0].item() - math.log(2)) < 1e-6
    # no overflow for huge margins
    big = torch.tensor([1e4])
    assert torch.isfinite(dpo_loss(-big, big, z[:1], z[:1], 1.0)[0])
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, 0.0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(z, z[:2], z, z, 0.1)


def test_pairs_from_ranking():
    pairs = pairs_from_ranking("p", ["a", "b", "c"], [2, 0, 1])
    assert pairs == [("p", "c", "a"), ("p", "c", "b"), ("p", "a", "b")]
    assert pairs_from_ranking("p", ["a", "b", "c"], [2, 0, 1], all_pairs=False) == [("p", "c", "b")]
    with pytest.raises(ValueError, match="permutation"):
        pairs_from_ranking("p", ["a", "b"], [0, 0])


def test_train_dpo_widens_the_margin_and_moves_probabilities():
    tok = CharTokenizer("abxy:?\n ")
    torch.manual_seed(0)
    policy = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32))
    ref = copy.deepcopy(policy)
    pairs = [("x?", "aa\n", "bb\n"), ("y?", "ab\n", "ba\n"), ("xy?", "aab\n", "bbb\n")]
    prompts, chosen, rejected = zip(*pairs)
    with torch.no_grad():
        before = (response_logprobs(policy, tok, prompts, chosen) - response_logprobs(policy, tok, prompts, rejected))
    hist = train_dpo(policy, ref, tok, pairs, beta=0.5, steps=30, batch_size=6, lr=3e-3, progress=False)
    with torch.no_grad():
        after = (response_logprobs(policy, tok, prompts, chosen) - response_logprobs(policy, tok, prompts, rejected))
    assert abs(hist[0]["loss"] - math.log(2)) < 1e-4  # policy == reference at step 0
    assert hist[-1]["loss"] < 0.3
    assert hist[-1]["margin"] > hist[0]["margin"] + 0.5
    assert hist[-1]["accuracy"] == 1.0
    assert bool((after > before + 1.0).all())
    # the reference model did not move
    for p, q in zip(ref.parameters(), copy.deepcopy(ref).parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="at least one"):
        train_dpo(policy, ref, tok, [], progress=False)
