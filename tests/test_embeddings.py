"""gptlib.embeddings: the encoder, InfoNCE, retrieval metrics, indexes, data and baselines."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.embeddings import (BM25Retriever, ExactIndex, FaissIndex, TfidfRetriever, code_search_pairs, code_words,
                               contrastive_loss, encode_texts, encoder_from_lm, extract_functions, info_nce, shakespeare_pairs,
                               load_encoder, make_encoder, mrr, pair_batch_fn, ranks_of_targets, recall_at_k,
                               retrieval_metrics, save_encoder, split_modules, tokenize_pairs)
from gptlib.heads import pad_right
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer

# ----------------------------------------------------------------------------- loss


def loop_info_nce(x, y, scale):
    B = x.shape[0]
    loss = 0.0
    for i in range(B):
        loss -= torch.log_softmax(scale * y @ x[i], 0)[i] + torch.log_softmax(scale * x @ y[i], 0)[i]
    return loss / (2 * B)


def test_info_nce_equals_a_loop():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(9, 16, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(9, 16, generator=g, dtype=torch.float64), dim=-1)
    for scale in (1.0, 14.3, 100.0):
        torch.testing.assert_close(info_nce(x, y, scale), loop_info_nce(x, y, scale), atol=1e-10, rtol=0)


def test_info_nce_perfect_pairs_give_small_loss_and_rejects_bad_shapes():
    x = torch.eye(8)
    assert info_nce(x, x, 100.0) < 1e-3
    assert math.isclose(float(info_nce(x, x, 0.0)), math.log(8), rel_tol=1e-6)  # scale 0: uniform guess
    with pytest.raises(ValueError, match="pair up"):
        info_nce(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="2-D"):
        info_nce(torch.randn(4), torch.randn(4))


# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pool", ["mean", "last"])
def test_encoder_gives_unit_vectors_unchanged_by_padding(causal, pool):
    torch.manual_seed(0)
    enc = make_encoder(20, block_size=16, n_layer=2, n_head=2, n_embd=16, causal=causal, pool=pool).eval()
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [3]]
    idx, mask = pad_right(seqs)
    batch = enc(idx, mask)
    torch.testing.assert_close(batch.norm(dim=-1), torch.ones(3))
    for i, s in enumerate(seqs):
        alone = enc(torch.tensor([s]))
        torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=0)


def test_learned_scale_is_clamped_at_100():
    enc = make_encoder(10, block_size=8, n_layer=1, n_head=1, n_embd=8)
    assert math.isclose(float(enc.scale().detach()), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        enc.logit_scale.fill_(10.0)
    assert math.isclose(float(enc.scale().detach()), 100.0, rel_tol=1e-5)


def test_encoder_from_lm_copies_the_weights_and_leaves_the_lm_alone():
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=12, block_size=8, n_layer=1, n_head=2, n_embd=8))
    enc = encoder_from_lm(lm, causal=False)
    assert not enc.config.causal and lm.config.causal
    for (name, a), b in zip(lm.state_dict().items(), enc.gpt.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        enc.gpt.wte.weight.add_(1.0)
    assert not torch.equal(lm.wte.weight, enc.gpt.wte.weight)


def test_contrastive_training_learns_a_toy_matching(tmp_path):
    """Pairs (word, its letters substituted a->i, b->j, ...): the loss falls far below log(batch)."""
    import random

    from gptlib.train import TrainConfig, train

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(5)) for _ in range(200)]
    tok = CharTokenizer("abcdefghijklmnop ")
    code = str.maketrans("abcdefgh", "ijklmnop")
    data = tokenize_pairs(tok, [(w, w.translate(code)) for w in words], 8, 8)
    torch.manual_seed(0)
    enc = make_encoder(tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=32, causal=False)
    cfg = TrainConfig(max_iters=150, batch_size=32, block_size=8, lr=3e-3, min_lr=3e-4, warmup_iters=10,
                      eval_interval=150, eval_iters=4, progress=False, device="cpu", out_dir=None)
    res = train(enc, cfg, pair_batch_fn(data, 32), pair_batch_fn(data, 32), loss_fn=contrastive_loss)
    assert res.history[0]["val_loss"] > 3.0 and res.final_val_loss < 1.5, res.history
    # and the saved encoder embeds the same (fp16 storage: close, not equal)
    save_encoder(tmp_path / "enc", enc, tok, meta={"note": "test"})
    loaded, tok2, ckpt = load_encoder(tmp_path / "enc")
    assert ckpt["meta"]["note"] == "test" and ckpt["pool"] == "mean"
    a = encode_texts(enc, tok, words[:20])
    b = encode_texts(loaded, tok2, words[:20])
    assert (a * b).sum(-1).min() > 0.999
    with pytest.raises(ValueError, match="no texts"):
        encode_texts(enc, tok, [])
    with pytest.raises(FileNotFoundError, match="ckpt.json"):
        load_encoder(tmp_path)


def test_pair_batch_fn_rejects_batches_without_negatives():
    data = tokenize_pairs(CharTokenizer("ab"), [("a", "b"), ("b", "a")], 4, 4)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        pair_batch_fn(data, 1)


# ----------------------------------------------------------------------------- metrics and indexes


def test_metrics_equal_hand_computed_values():
    scores = torch.tensor([[0.9, 0.1, 0.3],    # answer 0 ranked 1st
                           [0.2, 0.5, 0.8],    # answer 1 ranked 2nd
                           [0.7, 0.6, 0.1],    # answer 2 ranked 3rd
                           [0.0, 0.0, 0.0]])   # all tied: answer 1 counted last (rank 3)
    targets = torch.tensor([0, 1, 2, 1])
    ranks = ranks_of_targets(scores, targets)
    assert ranks.tolist() == [1, 2, 3, 3]
    assert math.isclose(mrr(ranks), (1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    m = retrieval_metrics(scores, targets, ks=(1, 2))
    assert m == {"MRR": mrr(ranks), "R@1": 0.25, "R@2": 0.5}
    with pytest.raises(ValueError, match="larger than the corpus"):
        recall_at_k(ranks, 4, n_candidates=3)
    with pytest.raises(ValueError, match="one target per query"):
        ranks_of_targets(scores, targets[:2])
    with pytest.raises(ValueError, match="empty"):
        ranks_of_targets(torch.zeros(2, 0), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="1-based"):
        mrr([0, 1])


def test_exact_and_faiss_indexes_agree():
    g = torch.Generator().manual_seed(0)
    vectors, queries = torch.randn(500, 24, generator=g), torch.randn(37, 24, generator=g)
    s1, i1 = ExactIndex(vectors, batch_size=10).search(queries, 10)
    s2, i2 = FaissIndex(vectors).search(queries, 10)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=0)
    brute = F.normalize(queries, dim=-1) @ F.normalize(vectors, dim=-1).T
    torch.testing.assert_close(s1[:, 0], brute.max(1).values, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [ExactIndex, FaissIndex])
def test_indexes_reject_bad_input(cls):
    with pytest.raises(ValueError, match="empty corpus"):
        cls(torch.zeros(0, 4))
    index = cls(torch.randn(5, 4))
    with pytest.raises(ValueError, match="k=6"):
        index.search(torch.randn(1, 4), 6)
    with pytest.raises(ValueError, match=r"\(Q, 4\)"):
        index.search(torch.randn(1, 3), 2)


# ----------------------------------------------------------------------------- data and baselines

SOURCE = '''
def add(a, b):
    """Add two numbers and return the sum.

    More text here.
    """
    return a + b


class Box:
    def open(self):
        """Open the box for business."""
        self.is_open = True

    def short(self):
        """Too short."""
        return 1

    def only_doc(self):
        """This function has nothing but its docstring."""
'''


def test_extract_functions_removes_the_docstring():
    found = {name: (query, code) for name, query, code in extract_functions(SOURCE)}
    assert set(found) == {"add", "Box.open"}
    assert found["add"] == ("Add two numbers and return the sum.", "def add(a, b):\n    return a + b")
    assert found["Box.open"][1] == "def open(self):\n    self.is_open = True"
    assert extract_functions("def broken(:\n") == []


def test_split_is_by_module_and_stable():
    names = [f"mod{i}" for i in range(300)]
    split = split_modules(names)
    assert set(split.values()) == {"train", "val", "test"}
    assert split_modules(names[:50]) == {m: split[m] for m in names[:50]}  # other modules do not matter
    with pytest.raises(ValueError, match="fractions"):
        split_modules(names, (0.5, 0.5, 0.5))


def test_code_search_pairs_hold_out_whole_modules():
    train, test = code_search_pairs("train"), code_search_pairs("test")
    assert len(train) > 1000 and len(test) > 100
    assert not {p.module for p in train} & {p.module for p in test}
    assert len({p.query for p in test}) == len(test) and len({p.code for p in test}) == len(test)
    assert all(p.query not in p.code for p in test[:200])  # the docstring is gone from the code
    with pytest.raises(ValueError, match="split"):
        code_search_pairs("dev")


def test_code_words_and_word_baselines():
    assert code_words("readLine_count2 HTTPServer") == ["read", "line", "count", "2", "http", "server"]
    docs = ["def parse_url(url): return split(url)", "def read_file(path): return open(path).read()",
            "def add(a, b): return a + b"]
    queries = ["parse a url", "read a file from a path", "add numbers a and b"]
    for retriever in (TfidfRetriever(docs), BM25Retriever(docs)):
        scores = retriever.scores(queries)
        assert scores.shape == (3, 3)
        assert scores.argmax(1).tolist() == [0, 1, 2]


def test_shakespeare_pairs_are_neighbouring_speeches_of_held_out_plays():
    from gptlib.data import shakespeare_plays, split_documents

    train, val = shakespeare_pairs("train"), shakespeare_pairs("val")
    assert len(train) > 5 * len(val) > 1000
    _, val_plays = split_documents(shakespeare_plays(), 0.1, 0)
    text = "\n\n".join(val_plays.values())
    a, b = next((a, b) for a, b in val[10:] if len(a) < 300 and len(b) < 300)  # not cut to max_chars
    assert a + "\n\n" + b in text  # one speech, then the next
    assert not {x for x, _ in train[:2000]} & {x for x, _ in val}
    with pytest.raises(ValueError, match="split"):
        shakespeare_pairs("test")
