"""gptlib.finetune: the word-order task and one fine-tuning run (chapter 4, recipe finetune)."""
import random
import re

import pytest
import torch
import torch.nn.functional as F

from gptlib import finetune
from gptlib.heads import SequenceClassifier
from gptlib.model import GPT, GPTConfig


def test_shuffle_keeps_every_character_and_moves_words():
    passage = "the quick brown fox jumps over  the lazy dog\nand runs"
    rng = random.Random(0)
    shuffled = [finetune.shuffle_words(passage, rng) for _ in range(5)]
    for s in shuffled:
        assert sorted(s) == sorted(passage)
        # only words move: the runs of whitespace between them come in the same order
        assert re.findall(r"\s+", s) == re.findall(r"\s+", passage)
        assert sorted(s.split()) == sorted(passage.split())
    assert any(s != passage for s in shuffled)


def test_spoken_text_drops_speaker_lines_only():
    play = "DON PEDRO:\nGood morrow, Benedick.\nBENEDICK:\nI am: here.\n"
    assert finetune.spoken_text(play) == "Good morrow, Benedick.\nI am: here."


def test_examples_are_consecutive_passages_half_kept():
    plays = {"a": "x" * 10 + " ".join(["word"] * 400)}
    texts, labels = finetune.make_examples(plays, ["a"], seed=0, passage=32)
    assert all(len(t) == 32 for t in texts)
    assert 0.3 < sum(labels) / len(labels) < 0.7
    # a kept passage is the original text at its position
    text = finetune.spoken_text(plays["a"])
    for i, (t, y) in enumerate(zip(texts, labels)):
        if y == 1:
            assert t == text[32 * i:32 * (i + 1)]


def test_balanced_subset_halves_by_class_and_depends_on_the_seed():
    y = torch.tensor([0] * 50 + [1] * 30)
    rows = finetune.balanced_subset(y, 11, seed=0)
    assert len(rows) == 11 and len(set(rows.tolist())) == 11
    assert int((y[rows] == 0).sum()) == 6 and int((y[rows] == 1).sum()) == 5
    assert torch.equal(rows, finetune.balanced_subset(y, 11, seed=0))
    assert not torch.equal(rows, finetune.balanced_subset(y, 11, seed=1))


def _tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16))


def test_gpt1_loss_is_classification_plus_lambda_times_next_token():
    clf = SequenceClassifier(_tiny(), 2).eval()
    x, labels = torch.randint(0, 11, (4, 12)), torch.tensor([0, 1, 1, 0])
    assert finetune.gpt1_loss(clf, x, labels, 0.0).item() == pytest.approx(
        F.cross_entropy(clf(x), labels).item(), abs=1e-6)
    lm = clf.gpt(x)  # (B, T, V)
    nll = F.cross_entropy(lm[:, :-1].reshape(-1, 11), x[:, 1:].reshape(-1))
    expected = F.cross_entropy(clf(x), labels) + 0.5 * nll
    assert finetune.gpt1_loss(clf, x, labels, 0.5).item() == pytest.approx(expected.item(),
                                                                          abs=1e-5)


def _task():
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 11, (40, 12), generator=g)
    y = torch.tensor([0, 1] * 20)
    return finetune.WordOrderTask(X, y, X[:10], y[:10], [], [], [])


def test_fine_tune_is_seeded_and_leaves_the_pretrained_model_alone():
    base = _tiny()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    run = lambda seed: finetune.fine_tune(base, _task(), "pre-trained", 10, seed, 0.5,  # noqa: E731
                                          steps=3, batch=4)
    a, b, c = run(0), run(0), run(1)
    assert a["curve"] == b["curve"] and a["lm_loss"] == b["lm_loss"]
    assert a["curve"] != c["curve"]
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    assert 0.0 <= a["accuracy"] <= 1.0 and a["lm_loss"] > 0
    scratch = finetune.fine_tune(base, _task(), "from scratch", 10, 0, steps=2, batch=4)
    assert scratch["lm_loss"] is None


def test_unknown_start_is_a_clear_error():
    with pytest.raises(ValueError, match="init must be 'pre-trained' or 'from scratch'"):
        finetune.fine_tune(_tiny(), _task(), "pretrained", 10, 0, steps=1, batch=2)
