"""Tests for gptlib.sampling: the filters, sample_next, and the generation loop."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gptlib.model import GPT, GPTConfig
from gptlib.sampling import apply_temperature, generate, sample_next, top_k_filter, top_p_filter


class CountingModel(nn.Module):
    """A fake language model that is certain the next token is (last token + 1) mod V."""

    def __init__(self, vocab_size: int = 10, block_size: int = 64) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, vocab_size=vocab_size)
        self.V = vocab_size

    def forward(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        return 20.0 * nn.functional.one_hot((idx + 1) % self.V, self.V).float()


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.gpt2(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=32)).eval()


# ----------------------------------------------------------------------------- building blocks


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    filtered = top_k_filter(logits, 3)
    assert torch.isfinite(filtered).sum(-1).tolist() == [3, 3]
    assert filtered[0, 1] == 5.0  # the best token survives with its value unchanged
    assert torch.equal(top_k_filter(logits, 6), logits)
    with pytest.raises(ValueError):
        top_k_filter(logits, 0)


def test_top_p_on_a_hand_made_distribution():
    # Token probabilities 0.05, 0.5, 0.15, 0.3 (deliberately not sorted).
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()

    def kept(p):
        return torch.isfinite(top_p_filter(logits, p)).nonzero().flatten().tolist()

    assert kept(0.3) == [1]  # 0.5 alone already covers 0.3
    assert kept(0.75) == [1, 3]  # 0.5 + 0.3 = 0.8 >= 0.75
    assert kept(0.9) == [1, 2, 3]  # 0.95 >= 0.9
    assert kept(0.99) == [0, 1, 2, 3]
    assert kept(1e-6) == [1]  # the top token is always kept
    assert kept(1.0) == [0, 1, 2, 3]
    # Kept logits are unchanged, so renormalised probabilities follow the originals.
    renorm = torch.softmax(top_p_filter(logits, 0.75), -1)
    torch.testing.assert_close(renorm, torch.tensor([0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]))


def test_temperature():
    logits = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(apply_temperature(logits, 2.0), logits / 2)
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(logits, 0.0)
    # Low temperature concentrates the distribution on the argmax.
    assert torch.softmax(apply_temperature(logits, 0.1), -1)[2] > 0.99


def test_greedy_and_zero_temperature_are_argmax():
    logits = torch.randn(5, 30)
    expected = logits.argmax(-1)
    assert torch.equal(sample_next(logits, greedy=True), expected)
    assert torch.equal(sample_next(logits, temperature=0.0), expected)
    assert torch.equal(sample_next(logits, top_k=1, generator=torch.Generator().manual_seed(0)), expected)


def test_sample_next_respects_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(2000, 10)
    logits[:, 7] = 1.0
    logits[:, 3] = 0.9
    tokens = sample_next(logits, top_k=2, generator=g)
    assert set(tokens.tolist()) == {3, 7}
    # Frequencies follow softmax([1, 0.9]) = [0.525, 0.475] roughly.
    assert abs((tokens == 7).float().mean().item() - 1 / (1 + math.exp(-0.1))) < 0.05


def test_seeded_sampling_is_reproducible(gpt):
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(1))

    def run(seed):
        return generate(gpt, prompt, 15, temperature=1.5, top_p=0.95, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(123), run(123))
    assert not torch.equal(run(123), run(456))


# ----------------------------------------------------------------------------- generate


def test_greedy_with_and_without_cache_identical(gpt):
    prompt = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(2))
    with_cache = generate(gpt, prompt, 12, greedy=True, use_cache=True)
    without = generate(gpt, prompt, 12, greedy=True, use_cache=False)
    assert with_cache.shape == (2, 17)
    assert torch.equal(with_cache[:, :5], prompt)
    assert torch.equal(with_cache, without)


def test_generation_past_block_size_crops_instead_of_crashing(gpt):
    prompt = torch.randint(0, 40, (1, 30), generator=torch.Generator().manual_seed(3))  # longer than 24
    with_cache = generate(gpt, prompt, 30, greedy=True, use_cache=True)
    without = generate(gpt, prompt, 30, greedy=True, use_cache=False)
    assert with_cache.shape == (1, 60)
    assert torch.equal(with_cache, without)
    # Each new token is the model's greedy choice given the last block_size tokens.
    last_window = with_cache[:, 60 - 1 - 24:60 - 1]
    assert gpt(last_window)[0, -1].argmax() == with_cache[0, -1]


def test_gpt_generate_method_delegates(gpt):
    prompt = torch.zeros(1, 2, dtype=torch.long)
    assert torch.equal(gpt.generate(prompt, 6, greedy=True), generate(gpt, prompt, 6, greedy=True))


def test_generate_restores_training_mode(gpt):
    gpt.train()
    try:
        generate(gpt, torch.zeros(1, 1, dtype=torch.long), 3)
        assert gpt.training
    finally:
        gpt.eval()


def test_stop_sequence_stops_and_is_stripped():
    model = CountingModel()
    prompt = torch.tensor([[0]])
    assert generate(model, prompt, 8, greedy=True).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 8]]
    out = generate(model, prompt, 8, greedy=True, stop=[[3, 4]])
    assert out.tolist() == [[0, 1, 2]]
    # A stop sequence in the prompt does not count: only generated tokens are checked.
    out = generate(model, torch.tensor([[3, 4, 5]]), 4, greedy=True, stop=[[3, 4], [7]])
    assert out.tolist() == [[3, 4, 5, 6]]


def test_stop_with_a_batch_waits_for_every_row():
    model = CountingModel()
    prompt = torch.tensor([[0], [5]])
    out = generate(model, prompt, 20, greedy=True, stop=[[3]], pad_token=-1)
    # Row 0 stops after "1 2" (3 stripped); row 1 runs 6 7 8 9 0 1 2 then hits 3.
    assert out.tolist() == [
        [0, 1, 2, -1, -1, -1, -1, -1],
        [5, 6, 7, 8, 9, 0, 1, 2],
    ]


def test_eos_token_is_kept_and_stops():
    model = CountingModel()
    out = generate(model, torch.tensor([[0]]), 10, greedy=True, eos_token=4)
    assert out.tolist() == [[0, 1, 2, 3, 4]]
