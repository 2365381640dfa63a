"""GPT-1's fine-tuning experiment (chapter 4): a word-order task, and one fine-tuning run.

The task needs no human labels: a 64-character passage of a play is kept as Shakespeare wrote
it (label 1) or has its words shuffled (label 0). Shuffling keeps every character and space,
so only the order of the words gives the answer. The labelled pool and the test passages come
from different plays, both held out of pre-training (``gpt1/shakespeare`` holds out four).

:func:`fine_tune` is one run of the chapter's grid (labels x initialisation x seed x lambda):
``SequenceClassifier`` on a pre-trained or fresh GPT, trained with GPT-1's loss
``L3 = L2 + lambda * L1``; the chapter runs one live and the recipe ``finetune`` runs them all.
"""
from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptlib.data import shakespeare_plays, split_documents
from gptlib.device import seed_everything
from gptlib.evaluate import eval_mode
from gptlib.heads import SequenceClassifier
from gptlib.model import GPT, lm_loss
from gptlib.train import TrainConfig, train

__all__ = ["PASSAGE", "LABELLED_PLAYS", "TEST_PLAYS", "spoken_text", "shuffle_words",
           "make_examples", "WordOrderTask", "word_order_task", "balanced_subset",
           "gpt1_loss", "lm_loss_on", "fine_tune"]

PASSAGE = 64  # characters
LABELLED_PLAYS = ["A Midsummer Night's Dream", "Much Ado About Nothing"]
TEST_PLAYS = ["Henry VI, Part 2", "The Comedy of Errors"]
# a line like "DON PEDRO:" (no lower case, ends with a colon)
SPEAKER = re.compile(r"[^a-z]+:")


def spoken_text(play: str) -> str:
    """The words spoken in a play. Speaker names are removed: "DON PEDRO:" moved into the
    middle of a line by a shuffle would give the answer away without any knowledge of English."""
    return "\n".join(line for line in play.split("\n") if line and not SPEAKER.fullmatch(line))


def shuffle_words(passage: str, rng: random.Random) -> str:
    # words at even indices, the whitespace between them at odd ones
    parts = re.split(r"(\s+)", passage)
    words = parts[0::2]
    rng.shuffle(words)
    parts[0::2] = words
    return "".join(parts)


def make_examples(plays: dict[str, str], titles: list[str], seed: int,
                  passage: int = PASSAGE) -> tuple[list[str], list[int]]:
    """Consecutive passages of ``titles``, each kept (1) or shuffled (0) with probability 1/2."""
    rng = random.Random(seed)
    texts, labels = [], []
    for title in titles:
        text = spoken_text(plays[title])
        for start in range(0, len(text) - passage + 1, passage):
            chunk = text[start:start + passage]
            keep = rng.random() < 0.5
            texts.append(chunk if keep else shuffle_words(chunk, rng))
            labels.append(int(keep))
    return texts, labels


@dataclass
class WordOrderTask:
    """Token ids and labels of the labelled pool and of the test passages."""

    X_pool: torch.Tensor
    y_pool: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    pool_texts: list[str]
    test_texts: list[str]
    heldout_plays: list[str]

    @property
    def originals(self) -> torch.Tensor:
        """Up to 64 unshuffled test passages: the text the LM loss after fine-tuning is on."""
        return self.X_test[self.y_test == 1][:64]


def word_order_task(tokenizer, data: dict, n_test: int | None = None) -> WordOrderTask:
    """The task for the model pre-trained with data settings ``data`` (its held-out plays);
    ``n_test`` test passages drawn at random (seed 0), or all of them."""
    plays = shakespeare_plays()
    _, heldout = split_documents(plays, data["val_fraction"], data["seed"])
    if not set(LABELLED_PLAYS + TEST_PLAYS) <= set(heldout):
        raise ValueError(f"the task's plays must be held out of pre-training; held out: {heldout}")
    pool_texts, pool_labels = make_examples(plays, LABELLED_PLAYS, seed=1)
    test_texts, test_labels = make_examples(plays, TEST_PLAYS, seed=2)

    def encode(texts):
        return torch.tensor([tokenizer.encode(t) for t in texts])

    X_test, y_test = encode(test_texts), torch.tensor(test_labels)
    if n_test is not None:
        keep = torch.randperm(len(X_test), generator=torch.Generator().manual_seed(0))[:n_test]
        X_test, y_test = X_test[keep], y_test[keep]
        test_texts = [test_texts[i] for i in keep.tolist()]
    return WordOrderTask(encode(pool_texts), torch.tensor(pool_labels), X_test, y_test,
                         pool_texts, test_texts, list(heldout))


def balanced_subset(y_pool: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` labelled examples, half of each class, drawn with ``seed``."""
    rng = random.Random(seed)
    rows: list[int] = []
    for label in (0, 1):
        candidates = (y_pool == label).nonzero().flatten().tolist()
        rng.shuffle(candidates)
        rows += candidates[: n // 2 + (n % 2 if label == 0 else 0)]
    return torch.tensor(rows)


def gpt1_loss(model: SequenceClassifier, x: torch.Tensor, labels: torch.Tensor,
              lam: float) -> torch.Tensor:
    """GPT-1's fine-tuning loss: L2 (classification) + lam * L1 (next token, same text).

    (Chapter 4 prints this function: its lines stay within 88 characters.)
    """
    if lam == 0.0:
        return F.cross_entropy(model(x), labels)
    cls_logits, lm_logits = model.forward_with_lm(x)
    next_token = lm_loss(lm_logits[:, :-1], x[:, 1:])
    return F.cross_entropy(cls_logits, labels) + lam * next_token


@torch.no_grad()
def lm_loss_on(clf: SequenceClassifier, ids: torch.Tensor) -> float:
    """The classifier's GPT body as a language model: its loss on ``ids`` (eval mode)."""
    x = ids.to(next(clf.parameters()).device)
    with eval_mode(clf):
        return lm_loss(clf.gpt(x)[:, :-1], x[:, 1:]).item()


def fine_tune(pretrained: GPT, task: WordOrderTask, init: str, n_labels: int, seed: int,
              lam: float = 0.0, *, steps: int, batch: int, pool: str = "mean",
              device: str | torch.device = "cpu") -> dict:
    """One run: ``init`` "pre-trained" (a copy of ``pretrained``) or "from scratch" (same shape,
    fresh weights), ``n_labels`` balanced examples drawn with ``seed``, ``steps`` AdamW steps
    (lr 1e-3, warm-up, cosine decay), dropout 0.1 before the head. Returns the test accuracy,
    the training curve and, for a pre-trained start, the LM loss on unshuffled test passages."""
    if init not in ("pre-trained", "from scratch"):
        raise ValueError(f"init must be 'pre-trained' or 'from scratch', not {init!r}")
    seed_everything(seed)
    gpt = copy.deepcopy(pretrained) if init == "pre-trained" else GPT(pretrained.config)
    clf = SequenceClassifier(gpt, n_classes=2, pool=pool, dropout=0.1).to(device)
    rows = balanced_subset(task.y_pool, n_labels, seed)
    X, y = task.X_pool[rows], task.y_pool[rows]

    def batch_fn(generator):
        pick = torch.randint(len(rows), (min(batch, len(rows)),), generator=generator)
        return X[pick], y[pick]

    run_cfg = TrainConfig(max_iters=steps, batch_size=batch, block_size=task.X_pool.shape[1],
                          lr=1e-3, min_lr=1e-4, warmup_iters=steps // 10, weight_decay=0.01,
                          log_interval=max(1, steps // 10), progress=False, seed=seed,
                          device=str(device))
    # train() moves each batch to the run's device
    result = train(clf, run_cfg, batch_fn, loss_fn=lambda model, b: gpt1_loss(model, *b, lam))
    accuracy = (clf.predict(task.X_test) == task.y_test).float().mean()
    return {"init": init, "labels": n_labels, "seed": seed, "lam": lam,
            "accuracy": accuracy.item(), "curve": [list(v) for v in result.curve("train_loss")],
            "lm_loss": lm_loss_on(clf, task.originals) if init == "pre-trained" else None}
