"""gptlib.induction: recurring-segment data, the attention-only model, induction and previous-token scores."""

from __future__ import annotations

import math

import pytest
import torch

from gptlib import induction


def test_recurring_batch_repeats_what_the_mask_says_and_varies_the_period():
    g = torch.Generator().manual_seed(0)
    x, y, mask = induction.recurring_batch(g, 64, 64, 50, min_len=4, max_len=12, copies=2)
    assert x.shape == y.shape == mask.shape == (64, 64) and torch.equal(x[:, 1:], y[:, :-1])
    # every masked target is the token that followed an earlier occurrence of the token before it
    for b in range(8):
        seq = torch.cat([x[b, :1], y[b]]).tolist()
        for t in mask[b].nonzero().flatten().tolist():
            prev = seq[t]
            assert any(seq[j] == prev and seq[j + 1] == seq[t + 1] for j in range(t)), (b, t)
    fill_x, _, fill_mask = induction.recurring_batch(
        g, 64, 64, 50, min_len=6, max_len=24, fill=True
    )
    periods = set()
    for b in range(64):
        row = fill_x[b].tolist()
        periods.add(
            min(p for p in range(6, 25) if row[-1] == row[-1 - p] and row[-2] == row[-2 - p])
        )
    assert len(periods) > 5 and fill_mask.float().mean() > 0.4
    with pytest.raises(ValueError, match="max_len"):
        induction.recurring_batch(g, 2, 16, 10, max_len=12)


def test_recurring_batch_same_seed_same_data_other_seed_other_data():
    a = induction.recurring_batch(torch.Generator().manual_seed(1), 4, 32, 20, 4, 8)
    b = induction.recurring_batch(torch.Generator().manual_seed(1), 4, 32, 20, 4, 8)
    c = induction.recurring_batch(torch.Generator().manual_seed(2), 4, 32, 20, 4, 8)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])


def test_model_shapes_causality_and_builder():
    torch.manual_seed(0)
    model = induction.AttnOnly.from_config(
        dict(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16)
    )
    idx = torch.randint(30, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 30)
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 30
    assert torch.allclose(model(changed)[:, :10], logits[:, :10], atol=1e-6)  # no peeking ahead
    maps = model.attention_weights(idx)
    assert len(maps) == 2 and maps[0].shape == (3, 2, 16, 16)
    assert (
        torch.allclose(maps[1].sum(-1), torch.ones(3, 2, 16)) and maps[0].triu(1).abs().max() == 0
    )
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_scores_of_hand_made_heads():
    L = 6
    T = 2 * L
    perfect = torch.zeros(T, T)
    prev = torch.zeros(T, T)
    for t in range(T):
        perfect[t, t - L + 1 if t >= L else 0] = 1
        prev[t, max(t - 1, 0)] = 1
    assert float(induction.induction_score_from_attention(perfect, L)) == pytest.approx(1.0)
    assert float(induction.previous_token_score(prev)) == pytest.approx(1.0)
    uniform = torch.tril(torch.ones(T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    assert float(induction.induction_score_from_attention(uniform, L)) == pytest.approx(
        sum(1 / (t + 1) for t in range(L, T)) / L
    )
    assert float(induction.previous_token_score(uniform)) == pytest.approx(
        sum(1 / (t + 1) for t in range(1, T)) / (T - 1)
    )
    with pytest.raises(ValueError, match="two halves"):
        induction.induction_score_from_attention(perfect, L + 1)


def test_repeated_tokens_and_copy_losses_of_an_untrained_model():
    seq = induction.repeated_tokens(3, 5, 10, seed=0)
    assert seq.shape == (3, 10) and torch.equal(seq[:, :5], seq[:, 5:])
    assert all(len(set(r[:5].tolist())) == 5 for r in seq)
    assert not torch.equal(seq, induction.repeated_tokens(3, 5, 10, seed=1))
    torch.manual_seed(0)
    model = induction.AttnOnly.from_config(
        dict(vocab_size=40, block_size=32, n_layer=1, n_head=2, n_embd=16)
    )
    losses = induction.copy_losses(model, length=10, n_seq=8)
    # untrained: near-uniform predictions on both copies
    assert abs(losses["first"] - math.log(40)) < 0.1 and abs(losses["second"] - math.log(40)) < 0.1


def test_a_short_training_run_records_its_curves():
    torch.manual_seed(0)
    model = induction.AttnOnly.from_config(
        dict(vocab_size=24, block_size=48, n_layer=2, n_head=2, n_embd=16)
    )
    out = induction.train_attn_only(
        model, steps=20, lr=3e-3, batch_size=8, min_len=4, max_len=12, fill=True, eval_every=10
    )
    h = out["history"]
    assert [e["step"] for e in h] == [0, 10, 20]
    assert {"loss", "repeat_loss", "copy1", "copy2", "induction", "previous"} <= set(h[1])
    assert h[-1]["loss"] < h[1]["loss"] + 0.05
    steps = [{"step": 0, "copy2": 4.0}, {"step": 10, "copy2": 3.9}, {"step": 20, "copy2": 1.0}]
    assert (
        induction.phase_change_step(steps) == 20 and induction.phase_change_step(steps[:2]) is None
    )
