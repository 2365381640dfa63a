"""Ready-made datasets of the train CLI and the recipes: ``train_val_tokens(name)``."""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from gptlib.data.batches import encode_documents, split_documents
from gptlib.data.corpora import _shakespeare_stem, cache_dir, shakespeare, shakespeare_plays
from gptlib.tasks import TASKS, Task, mix_tasks
from gptlib.tokenizer import ByteBPE, CharTokenizer, Tokenizer

__all__ = ["train_val_tokens", "DATASETS", "shakespeare_tasks"]

# --------------------------------------------------------------------------------------
# Ready-made datasets
# --------------------------------------------------------------------------------------


#: What a dataset builder returns: the tokenizer, the training and the validation documents.
DatasetParts = tuple[Tokenizer, dict[str, str], dict[str, str]]


def _shakespeare_char(val_fraction: float, seed: int, vocab_size: int | None) -> DatasetParts:
    plays = shakespeare_plays()
    # The vocabulary comes from the whole corpus, so no validation symbol is unknown.
    tokenizer = CharTokenizer.from_text(shakespeare())
    train, val = split_documents(plays, val_fraction, seed)
    return tokenizer, train, val


def _shakespeare_bpe(val_fraction: float, seed: int, vocab_size: int | None) -> DatasetParts:
    vocab_size = vocab_size or 1024
    train, val = split_documents(shakespeare_plays(), val_fraction, seed)
    # Learn merges from the training plays only: the validation plays stay truly unseen.
    path = cache_dir() / f"{_shakespeare_stem()}-bpe{vocab_size}-val{val_fraction}-seed{seed}.json"
    if path.exists():
        tokenizer = ByteBPE.load(path)
    else:
        tokenizer = ByteBPE.train("\n\n".join(train.values()), vocab_size)
        tokenizer.save(path)
    return tokenizer, train, val


def _mixed_plays(tasks: list[Task], seed: int, rate: float, max_lines: int) -> dict[str, str]:
    return {
        title: mix_tasks(text, tasks, random.Random(f"tasks/{seed}/{title}"), rate, max_lines)
        for title, text in shakespeare_plays().items()
    }


def _cached_mixed_plays(seed: int, rate: float, max_lines: int) -> dict[str, str]:
    """The plays with the book's tasks mixed in, cached on disk: mixing takes ~15 s and the
    recipes, chapter 5 and the tests all ask for the same text. The key holds the corpus
    version, the arguments and a hash of gptlib/tasks.py, so a changed generator never
    reuses old text."""
    tasks_source = Path(sys.modules[mix_tasks.__module__].__file__).read_bytes()
    key = hashlib.sha1(tasks_source).hexdigest()[:12]
    path = cache_dir() / f"{_shakespeare_stem()}-tasks-s{seed}-r{rate}-m{max_lines}-{key}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    plays = _mixed_plays(list(TASKS.values()), seed, rate, max_lines)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plays), encoding="utf-8")
    os.replace(tmp, path)  # whole or absent, even with two processes writing at once
    return plays


def shakespeare_tasks(
    val_fraction: float = 0.1,
    seed: int = 0,
    vocab_size: int | None = None,
    rate: float = 1.0,
    max_lines: int = 8,
    tasks: Sequence[Task] | None = None,
):
    """The ``"shakespeare_tasks"`` dataset: ``(tokenizer, train_plays, val_plays)``.

    Every play gets task lines mixed in by :func:`gptlib.tasks.mix_tasks` (``rate``, with a
    generator seeded from ``seed`` and the title, so each play's text is reproducible on its
    own), then whole plays are split as in :func:`split_documents`. The tokenizer is
    character-level, built from all the mixed text (``vocab_size`` is ignored: it is whatever
    the characters are).
    """
    if tasks is None:
        plays = _cached_mixed_plays(seed, rate, max_lines)
    else:
        plays = _mixed_plays(list(tasks), seed, rate, max_lines)
    tokenizer = CharTokenizer.from_text(
        "".join(plays.values()) + string.ascii_letters + string.digits + "=:"
    )
    train, val = split_documents(plays, val_fraction, seed)
    return tokenizer, train, val


#: name -> builder of ``(tokenizer, train_docs, val_docs)``.
DATASETS: dict[str, Callable[[float, int, int | None], DatasetParts]] = {
    "shakespeare_char": _shakespeare_char,
    "shakespeare_bpe": _shakespeare_bpe,
    # task lines mixed into the plays (chapter 5, gptlib.tasks)
    "shakespeare_tasks": shakespeare_tasks,
}


def train_val_tokens(
    name: str = "shakespeare_char",
    val_fraction: float = 0.1,
    seed: int = 0,
    vocab_size: int | None = None,
) -> tuple[Tokenizer, torch.Tensor, torch.Tensor]:
    """A ready-made dataset: ``(tokenizer, train_ids, val_ids)``, split by document.

    ``"shakespeare_char"``: one id per character (about 80 symbols), plays split by title.
    ``"shakespeare_bpe"``: a byte-level BPE with ``vocab_size`` ids (default 1024), trained
    on the training plays and cached.
    ``"shakespeare_tasks"``: the character corpus with task lines ("reverse: abc = cba")
    mixed in, chapter 5's pre-training data (see :mod:`gptlib.tasks`).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    tokenizer, train, val = DATASETS[name](val_fraction, seed, vocab_size)
    return tokenizer, encode_documents(train, tokenizer), encode_documents(val, tokenizer)
