"""gptlib.mlm: BERT's masking rule, the bidirectional GPT, and the blank-filling evaluations."""
from __future__ import annotations

import pytest
import torch

from gptlib.attention import MultiHeadAttention
from gptlib.mlm import (
    IGNORE,
    blank_positions,
    fill_blanks_left,
    fill_blanks_mlm,
    fill_blanks_scored,
    make_bidirectional,
    mask_tokens,
    masked_lm,
    mlm_batches,
)
from gptlib.model import GPT, GPTConfig, lm_loss

V, MASK = 20, 20


def test_mask_tokens_follows_the_80_10_10_rule():
    ids = torch.randint(V, (400, 250), generator=torch.Generator().manual_seed(0))
    inputs, targets = mask_tokens(ids, MASK, V, rate=0.15, generator=torch.Generator().manual_seed(1))
    chosen = targets != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert torch.equal(targets[chosen], ids[chosen])  # targets are the original ids
    assert torch.equal(inputs[~chosen], ids[~chosen])  # only chosen positions change
    c_in, c_ids = inputs[chosen], ids[chosen]
    masked = (c_in == MASK).float().mean().item()
    unchanged = (c_in == c_ids).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    assert abs(unchanged - (0.1 + 0.1 / V)) < 0.01  # a random id can equal the original
    assert c_in.max() <= MASK and (c_in[c_in != MASK] < V).all()


def test_mask_tokens_is_reproducible_and_validates():
    ids = torch.randint(V, (4, 30))
    a = mask_tokens(ids, MASK, V, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, MASK, V, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="rate"):
        mask_tokens(ids, MASK, V, rate=0.0)
    with pytest.raises(ValueError, match="sum"):
        mask_tokens(ids, MASK, V, mask_share=0.9, random_share=0.2)


def test_mlm_batches_shape_and_loss():
    data = torch.randint(V, (500,))
    batch_fn = mlm_batches(data, batch_size=6, block_size=16, mask_id=MASK, vocab_size=V)
    x, y = batch_fn(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 16)
    assert (y != IGNORE).any()
    # The default LM loss ignores unscored positions: it is the MLM loss.
    logits = torch.randn(6, 16, V + 1)
    scored = y != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[scored], y[scored])
    torch.testing.assert_close(lm_loss(logits, y), expected)
    with pytest.raises(ValueError):
        mlm_batches(data[:10], 2, 16, MASK, V)


def _tiny(vocab=V + 1, T=12):
    torch.manual_seed(0)
    return GPTConfig(vocab_size=vocab, block_size=T, n_layer=2, n_head=2, n_embd=16)


def test_make_bidirectional_lets_positions_see_the_future():
    gpt = GPT(_tiny()).eval()
    x = torch.randint(V, (1, 12))
    y = x.clone()
    y[0, 8] = (y[0, 8] + 1) % V
    with torch.no_grad():
        causal_change = (gpt(x) - gpt(y)).abs().sum(-1)[0]
        make_bidirectional(gpt)
        assert all(not m.causal for m in gpt.modules() if isinstance(m, MultiHeadAttention))
        bidir_change = (gpt(x) - gpt(y)).abs().sum(-1)[0]
    assert causal_change[:8].max() == 0  # causal: earlier positions ignore token 8
    assert bidir_change[:8].min() > 0  # bidirectional: every position sees it
    with pytest.raises(ValueError, match="no gptlib MultiHeadAttention"):
        make_bidirectional(torch.nn.Linear(2, 2))


def test_masked_lm_weights_match_a_masked_gpt():
    bert = masked_lm(_tiny())
    x = torch.randint(V, (2, 12))
    _, w = bert.h[0].attn(bert.wte(x) + bert.wpe(torch.arange(12)), return_weights=True)
    assert w.triu(1).sum() > 0  # weights above the diagonal: it looks ahead


def test_blank_positions_keep_a_margin():
    pos = blank_positions(1000, 32, margin=5, generator=torch.Generator().manual_seed(0))
    assert pos.min() >= 5 and pos.max() < 27
    with pytest.raises(ValueError):
        blank_positions(3, 10, margin=5)


class _Oracle(torch.nn.Module):
    """A "model" whose logits put all mass on a given sequence: at position t it predicts ids[t + shift]."""

    def __init__(self, ids: torch.Tensor, shift: int, vocab: int):
        super().__init__()
        self.ids, self.shift, self.vocab = ids, shift, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, T = x.shape
        target = self.ids[:, self.shift:self.shift + T] if self.ids.size(0) == B else self.ids[:1, self.shift:self.shift + T].expand(B, -1)
        logits = torch.full((B, T, self.vocab), -10.0)
        logits.scatter_(2, target[..., None], 10.0)
        return logits


def test_fill_blank_functions_read_the_right_positions():
    windows = torch.randint(V, (5, 12), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([3, 4, 5, 6, 7])
    truth = windows[torch.arange(5), pos]
    # An MLM oracle predicts the original token at each position.
    assert torch.equal(fill_blanks_mlm(_Oracle(windows, 0, V + 1), windows, pos, MASK), truth)
    # A causal oracle predicts the next token: its guess at pos - 1 is the blank.
    padded = torch.cat([windows, windows[:, :1]], dim=1)
    assert torch.equal(fill_blanks_left(_Oracle(padded, 1, V), windows, pos), truth)


def test_fill_blanks_scored_uses_the_right_side():
    # A trained bigram-like model: the text is a fixed cycle 0 1 2 ... and the model knows it.
    T = 10
    cycle = torch.arange(T) % 5

    class Cycle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # predicts (token + 1) % 5 after every token, softly
            logits = torch.full((*x.shape, 5), -3.0)
            logits.scatter_(2, ((x + 1) % 5)[..., None], 3.0)
            return logits

    windows = cycle[None].repeat(3, 1)
    pos = torch.tensor([3, 4, 6])
    guesses = fill_blanks_scored(Cycle(), windows, pos, 5)
    assert torch.equal(guesses, windows[torch.arange(3), pos])


def test_mlm_trains_with_the_default_loop():
    from gptlib.train import TrainConfig, train

    data = (torch.arange(3000) % 7).long()  # a periodic text: every blank is predictable
    bert = masked_lm(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=32))
    cfg = TrainConfig(max_iters=150, batch_size=16, block_size=16, lr=3e-3, min_lr=3e-4, warmup_iters=10,
                      eval_interval=150, eval_iters=2, progress=False, device="cpu")
    result = train(bert, cfg, mlm_batches(data, 16, 16, 7, 7), mlm_batches(data, 16, 16, 7, 7))
    windows = data[:320].view(20, 16)
    pos = blank_positions(20, 16, 3, torch.Generator().manual_seed(0))
    acc = (fill_blanks_mlm(bert, windows, pos, 7) == windows[torch.arange(20), pos]).float().mean()
    assert result.final_val_loss < result.history[0]["val_loss"]
    assert acc > 0.9


def test_a_saved_masked_lm_reloads_bidirectional_and_refuses_to_generate(tmp_path):
    from gptlib.checkpoint import load_model, save_model
    from gptlib.sampling import generate

    bert = masked_lm(_tiny())
    assert bert.config.causal is False
    save_model(tmp_path / "bert.safetensors", bert)
    again = load_model(tmp_path / "bert.safetensors")
    assert again.config.causal is False
    x = torch.randint(0, again.config.vocab_size, (1, 8))
    bert.eval()
    torch.testing.assert_close(again(x), bert(x))
    # position 0 sees the future: changing the last token changes the first position's logits
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % again.config.vocab_size
    assert not torch.allclose(again(x)[0, 0], again(y)[0, 0])
    with pytest.raises(ValueError, match="needs a causal model"):
        generate(again, x, 3)
