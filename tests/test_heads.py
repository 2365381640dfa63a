"""gptlib.heads: pooling, padding invariance, the LM side output, and training through train()."""
from __future__ import annotations

import pytest
import torch

from gptlib.heads import SequenceClassifier, pad_right, pool_hidden
from gptlib.model import GPT, GPTConfig

# Tiny models: one thread each (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(style: str = "gpt2", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16, style=style))


@pytest.mark.parametrize("style", ["gpt1", "gpt2"])
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_shapes_and_right_padding_changes_nothing(style, pool):
    clf = SequenceClassifier(tiny_gpt(style), n_classes=3, pool=pool).eval()
    short, long = [3, 5, 7], [1, 2, 3, 4, 5, 6, 7]
    ids, mask = pad_right([short, long], pad_id=0)
    assert ids.shape == (2, 7) and mask.sum().item() == 10
    batched = clf(ids, mask)
    assert batched.shape == (2, 3)
    alone_short = clf(torch.tensor([short]))
    alone_long = clf(torch.tensor([long]))
    torch.testing.assert_close(batched[0], alone_short[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], alone_long[0], atol=1e-5, rtol=0)
    # a different padding id gives the same answer too (the padding is never read)
    ids9, _ = pad_right([short, long], pad_id=9)
    torch.testing.assert_close(clf(ids9, mask), batched, atol=1e-5, rtol=0)


def test_pool_hidden_last_and_mean_by_hand():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(pool_hidden(h, mask, "last"), torch.stack([h[0, 1], h[1, 3]]))
    torch.testing.assert_close(pool_hidden(h, mask, "mean"), torch.stack([h[0, :2].mean(0), h[1].mean(0)]))
    torch.testing.assert_close(pool_hidden(h, None, "last"), h[:, -1])
    torch.testing.assert_close(pool_hidden(h, None, "mean"), h.mean(1))


def test_bad_arguments_are_explained():
    gpt = tiny_gpt()
    with pytest.raises(ValueError, match="pool must be"):
        SequenceClassifier(gpt, 2, pool="max")
    with pytest.raises(ValueError, match="n_classes"):
        SequenceClassifier(gpt, 0)
    with pytest.raises(ValueError, match="no real token"):
        pool_hidden(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty sequence"):
        pad_right([[1], []])
    with pytest.raises(ValueError, match="score"):
        SequenceClassifier(gpt, 2).score(torch.zeros(1, 3, dtype=torch.long))


def test_forward_with_lm_shares_one_pass_with_the_language_model():
    gpt = tiny_gpt("gpt1")
    clf = SequenceClassifier(gpt, n_classes=2).eval()
    idx = torch.randint(0, 17, (3, 9))
    cls_logits, lm_logits = clf.forward_with_lm(idx)
    torch.testing.assert_close(cls_logits, clf(idx))
    torch.testing.assert_close(lm_logits, gpt(idx))


def test_score_is_a_scalar_per_sequence_and_gradients_reach_the_gpt():
    clf = SequenceClassifier(tiny_gpt(), n_classes=1)
    ids, mask = pad_right([[1, 2], [3, 4, 5]])
    s = clf.score(ids, mask)
    assert s.shape == (2,)
    s.sum().backward()
    assert clf.gpt.wte.weight.grad is not None and clf.gpt.wte.weight.grad.abs().sum() > 0
    assert clf.head.weight.grad is not None


def test_predict_restores_training_mode_and_batches():
    clf = SequenceClassifier(tiny_gpt(), n_classes=4, dropout=0.1).train()
    idx = torch.randint(0, 17, (10, 5))
    pred = clf.predict(idx, batch_size=3)
    assert pred.shape == (10,) and clf.training
    clf.eval()
    torch.testing.assert_close(pred, clf(idx).argmax(-1))


def test_classifier_trains_with_the_book_training_loop():
    """A task a causal model can only solve by reading the whole sequence: does token 3 occur?"""
    from gptlib.train import TrainConfig, train

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    X = torch.randint(4, 17, (256, 8), generator=gen)
    y = torch.randint(0, 2, (256,), generator=gen)
    X[y == 1, torch.randint(0, 8, (int((y == 1).sum()),), generator=gen)] = 3

    def batch_fn(g):
        rows = torch.randint(0, 256, (32,), generator=g)
        return X[rows], y[rows]

    def loss_fn(model, batch):
        x, labels = batch
        return SequenceClassifier.classification_loss(model(x), labels)

    clf = SequenceClassifier(tiny_gpt(), n_classes=2, pool="mean")
    cfg = TrainConfig(max_iters=200, lr=3e-3, min_lr=3e-4, warmup_iters=10, batch_size=32,
                      block_size=8, log_interval=50, progress=False, device="cpu")
    result = train(clf, cfg, batch_fn, loss_fn=loss_fn)
    losses = result.curve("train_loss")[1]
    assert losses[-1] < 0.5 * losses[0], losses
    assert (clf.predict(X) == y).float().mean() > 0.9
