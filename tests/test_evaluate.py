"""gptlib.evaluate: the one held-out loss and the one continuation log-prob."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.evaluate import continuation_logprobs, eval_mode, heldout_loss, token_logprobs
from gptlib.model import GPT, GPTConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    # dropout on: every measurement must switch it off (and restore training mode after)
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.3))


def manual_logprob(model, prefix, cont):
    """log P(cont | prefix), one token at a time, with full forward passes (no batching)."""
    model.eval()
    total = 0.0
    seq = list(prefix)
    with torch.no_grad():
        for tok in cont:
            logits = model(torch.tensor([seq]))[0, -1]
            total += torch.log_softmax(logits, -1)[tok].item()
            seq.append(tok)
    return total


def test_continuation_logprobs_match_token_by_token(model):
    prefixes = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    conts = [[4, 5], [6, 7, 8, 9], [1]]
    model.train()
    got = continuation_logprobs(model, prefixes, conts)
    assert model.training  # restored
    want = [manual_logprob(model, p, c) for p, c in zip(prefixes, conts)]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=0)
    mean = continuation_logprobs(model, prefixes, conts, reduce="mean")
    torch.testing.assert_close(mean, torch.tensor([w / len(c) for w, c in zip(want, conts)]), atol=1e-4, rtol=0)
    rows = continuation_logprobs(model, prefixes, conts, reduce="none")
    assert rows.shape == (3, 4) and rows[2, 1:].eq(0).all()
    # batching does not change anything: one batch of 3 equals three batches of 1
    torch.testing.assert_close(continuation_logprobs(model, prefixes, conts, batch_size=1), got)


def test_continuation_logprobs_with_grad_keeps_the_graph(model):
    model.eval()
    lp = continuation_logprobs(model, [[1, 2]], [[3, 4]], grad=True)
    lp.sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="2 prefixes but 1"):
        continuation_logprobs(model, [[1], [2]], [[3]])
    with pytest.raises(ValueError, match="at least one token"):
        continuation_logprobs(model, [[1]], [[]])
    with pytest.raises(ValueError, match="context is 16.*shorten"):
        continuation_logprobs(model, [[1] * 15], [[2, 3, 4]])


def test_heldout_loss_is_cross_entropy_on_fixed_windows(model):
    ids = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(1))
    model.train()
    loss = heldout_loss(model, ids, block_size=8, batch_size=4, iters=3, seed=5)
    assert model.training
    # the same windows, drawn independently with the same seeded generator
    g = torch.Generator().manual_seed(5)
    model.eval()
    manual = []
    with torch.no_grad():
        for _ in range(3):
            starts = torch.randint(ids.numel() - 8, (4,), generator=g).tolist()
            x = torch.stack([ids[s:s + 8] for s in starts])
            y = torch.stack([ids[s + 1:s + 9] for s in starts])
            manual.append(F.cross_entropy(model(x).reshape(-1, 11), y.reshape(-1)).item())
    assert loss == pytest.approx(sum(manual) / 3, abs=1e-5)
    assert heldout_loss(model, ids, block_size=8, batch_size=4, iters=3, seed=5) == loss
    assert heldout_loss(model, ids, block_size=8, batch_size=4, iters=3, seed=6) != loss
    # an untrained model is close to uniform guessing
    assert abs(loss - math.log(11)) < 0.5


def test_token_logprobs_ignores_masked_positions():
    logits = torch.zeros(1, 3, 4)
    out = token_logprobs(logits, torch.tensor([[0, -100, 3]]))
    torch.testing.assert_close(out, torch.tensor([[-math.log(4), 0.0, -math.log(4)]]))


def test_eval_mode_restores_even_after_an_error(model):
    model.train()
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            assert not model.training
            raise RuntimeError
    assert model.training
