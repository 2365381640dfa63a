"""gptlib.embeddings, gptlib.retrieval, gptlib.codesearch: encoders, InfoNCE, the adapter,
retrieval metrics, fusion, indexes, data and baselines."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlib import assets
from gptlib.codesearch import (
    CODE_CHARS,
    code_search_pairs,
    extract_functions,
    outside_pairs,
    outside_test_pairs,
    split_modules,
    unpack_pairs,
)
from gptlib.embeddings import (
    CodeSearchAdapter,
    ContrastiveEncoder,
    LowRankAdapter,
    adapter_loss,
    contrastive_loss,
    encode,
    encode_texts,
    encoder_from_lm,
    info_nce,
    make_encoder,
    merge_adapters,
    pair_batch_fn,
    tokenize_pairs,
    train_adapter,
)
from gptlib.heads import pad_right
from gptlib.model import GPT, GPTConfig
from gptlib.retrieval import (
    BM25Retriever,
    ExactIndex,
    FaissIndex,
    TfidfRetriever,
    code_words,
    mrr,
    paired_bootstrap,
    random_mrr,
    ranks_of_targets,
    recall_at_k,
    reciprocal_rank_fusion,
    retrieval_metrics,
)
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
    # and an asset of it embeds the same (fp16 storage: close, not equal)
    config = {"gpt": dataclasses.asdict(enc.config), "pool": enc.pool, "query_len": 8,
              "code_len": 8}
    assets.save("emb/toy", command="test", settings={}, metrics={}, wall_s=0, model=enc,
                builder="gptlib.embeddings:ContrastiveEncoder.from_config", model_config=config,
                tokenizer=tok, root=tmp_path, half=True)
    loaded = assets.load("emb/toy", root=tmp_path)
    assert isinstance(loaded.model, ContrastiveEncoder)
    a = encode_texts(enc, tok, words[:20])
    b = encode_texts(loaded.model, loaded.tokenizer, words[:20])
    assert (a * b).sum(-1).min() > 0.999
    c = encode("emb/toy", words[:20], kind="code", root=tmp_path)
    assert np.allclose((c * c).sum(1), 1, atol=1e-5) and np.allclose(c, b.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no texts"):
        encode_texts(enc, tok, [])
    with pytest.raises(ValueError, match="kind"):
        encode("emb/toy", ["x"], kind="doc", root=tmp_path)
    with pytest.raises(TypeError, match="wrap it"):
        encode("emb/toy", "x", root=tmp_path)


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


def test_code_is_cut_to_the_same_length_for_every_system():
    test = code_search_pairs("test")
    assert max(len(p.code) for p in test) == CODE_CHARS


def test_outside_pairs_are_a_fixed_seeded_selection_outside_the_stdlib():
    a = outside_pairs(n=30, seed=0, packages=["requests", "click"])
    assert a == outside_pairs(n=30, seed=0, packages=["requests", "click"])
    assert a != outside_pairs(n=30, seed=1, packages=["requests", "click"])
    assert len(a) == 30 and {p.module for p in a} == {"requests", "click"}
    assert sum(p.module == "click" for p in a) == 15  # an equal share per package
    stdlib = {p.code for split in ("train", "val", "test") for p in code_search_pairs(split)}
    assert not {p.code for p in a} & stdlib
    assert all(len(p.code) <= CODE_CHARS and "test" not in p.path for p in a)
    with pytest.raises(RuntimeError, match="installed"):
        outside_pairs(n=5, packages=["no_such_package_xyz"])
    test = outside_test_pairs(n=30, packages=["requests", "click"])
    assert test and not {(p.path, p.name) for p in test} & {(p.path, p.name) for p in a}


# ----------------------------------------------------------------------------- cpt: the adapter


def test_info_nce_hard_negatives_equal_a_loop_and_the_mask_removes_them():
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    h = F.normalize(torch.randn(3, 8, generator=g, dtype=torch.float64), dim=-1)
    s = 7.0
    want = 0.0
    for i in range(5):
        fwd = torch.cat([s * y @ x[i], s * h @ x[i]])  # x_i against every y and every hard one
        want = want - torch.log_softmax(fwd, 0)[i] - torch.log_softmax(s * x @ y[i], 0)[i]
    torch.testing.assert_close(info_nce(x, y, s, hard=h), want / 10, atol=1e-12, rtol=0)
    everything = torch.ones(5, 3, dtype=torch.bool)  # masking all hard ones = none at all
    torch.testing.assert_close(info_nce(x, y, s, hard=h, hard_mask=everything), info_nce(x, y, s))
    # a hard negative equal to a positive raises the loss of its row unless it is masked
    dup = y[:1]
    assert info_nce(x, y, s, hard=dup) > info_nce(x, y, s)


def test_low_rank_adapter_starts_as_the_identity_and_has_rank_r_updates():
    torch.manual_seed(0)
    a = LowRankAdapter(16, 3)
    x = torch.randn(10, 16)
    assert torch.equal(a(x), x)
    with torch.no_grad():
        a.B.normal_()
    delta = a(x) - x
    assert torch.linalg.matrix_rank(delta) == 3
    with pytest.raises(ValueError, match="rank"):
        LowRankAdapter(16, 17)
    m = CodeSearchAdapter(16, 2)
    assert torch.allclose(m(x, "query"), F.normalize(x, dim=-1))
    with pytest.raises(ValueError, match="kind"):
        m(x, "doc")
    # mix interpolates the adapter's output between x (mix 0) and x + xAB (mix 1)
    with torch.no_grad():
        m.code.B.normal_()
    full = m.code(x)
    for mix, want in [(0.0, x), (0.5, (x + full) / 2), (1.0, full)]:
        m.mix = mix
        torch.testing.assert_close(m(x, "code"), F.normalize(want, dim=-1))
    m2 = CodeSearchAdapter.from_config({"dim": 16, "rank": 2, "mix": 0.25})
    assert m2.mix == 0.25 and CodeSearchAdapter.from_config({"dim": 16, "rank": 2}).mix == 1.0


def _toy_vectors(n, seed, dim=16):
    """Queries and codes that share a signal, but the codes are rotated in 4 of the dims:
    zero-shot cosine finds part of the answers, a learned correction finds more."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g)
    q = F.normalize(z + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    c = z.clone()
    c[:, :4] = -c[:, :4]
    c = F.normalize(c + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    return q, c


def test_train_adapter_beats_zero_shot_on_held_out_pairs_and_early_stops():
    q, c = _toy_vectors(600, 0)
    vq, vc = _toy_vectors(100, 1)
    tq, tc = _toy_vectors(200, 2)
    hard = torch.randint(0, 600, (600,), generator=torch.Generator().manual_seed(0))
    run = train_adapter(q, c, vq, vc, hard=hard, rank=4, steps=200, batch_size=64, lr=1e-2,
                        eval_every=10, patience=5)
    with torch.no_grad():
        tuned = mrr(ranks_of_targets(run.model(tq, "query") @ run.model(tc, "code").T,
                                     torch.arange(200)))
    zero = mrr(ranks_of_targets(tq @ tc.T, torch.arange(200)))
    assert tuned > zero + 0.1, (tuned, zero)
    assert run.best_step > 0 and run.history[0]["step"] == 0
    # same seed: same model; another seed: another one
    again = train_adapter(q, c, vq, vc, hard=hard, rank=4, steps=30, batch_size=64, lr=1e-2)
    other = train_adapter(q, c, vq, vc, hard=hard, rank=4, steps=30, batch_size=64, lr=1e-2, seed=1)
    first = train_adapter(q, c, vq, vc, hard=hard, rank=4, steps=30, batch_size=64, lr=1e-2)
    assert torch.equal(again.model.query.B, first.model.query.B)
    assert not torch.equal(other.model.query.B, first.model.query.B)
    # the returned model is the best one measured; training stopped `patience` checks later
    best = max(h["val_mrr"] for h in run.history)
    assert math.isclose(run.best_val_mrr, best)
    with torch.no_grad():
        assert math.isclose(mrr(ranks_of_targets(run.model(vq, "query") @ run.model(vc, "code").T,
                                                 torch.arange(100))), best, rel_tol=1e-6)
    last = run.history[-1]["step"]
    assert last == 200 or last - run.best_step == 5 * 10


def test_merge_adapters_is_the_average_of_the_adapters_corrections_in_one_adapter():
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    models = [CodeSearchAdapter(16, 2), CodeSearchAdapter(16, 3), CodeSearchAdapter(16, 2)]
    for m in models:
        with torch.no_grad():
            m.query.B.normal_()
            m.code.B.normal_()
            m.logit_scale.fill_(float(torch.rand(())) + 2)
    for mix in (0.5, 1.0):
        merged = merge_adapters(models, mix=mix)
        assert merged.rank == 7 and merged.mix == mix
        for kind in ("query", "code"):
            delta = sum((m.query if kind == "query" else m.code)(x) - x for m in models) / 3
            torch.testing.assert_close(merged(x, kind), F.normalize(x + mix * delta, dim=-1))
    torch.testing.assert_close(merged.logit_scale,
                               torch.stack([m.logit_scale for m in models]).mean())
    # one adapter merged is that adapter; the inputs are left untouched
    one = merge_adapters(models[:1])
    torch.testing.assert_close(one(x, "code"), models[0](x, "code"))
    assert models[0].rank == 2
    with pytest.raises(ValueError, match="no adapters"):
        merge_adapters([])
    with pytest.raises(ValueError, match="widths"):
        merge_adapters([CodeSearchAdapter(16, 2), CodeSearchAdapter(8, 2)])


def test_unpack_pairs_reads_back_what_the_recipe_packs():
    from gptlib.recipes.embeddings import _pack

    pairs = outside_pairs(n=6, seed=0, packages=["requests"])
    packed = _pack(pairs)
    assert packed.dtype == torch.uint8 and unpack_pairs(packed) == pairs


def test_adapter_loss_masks_a_hard_negative_that_is_a_positive_in_the_batch():
    q, c = _toy_vectors(8, 0)
    m = CodeSearchAdapter(16, 2)
    rows = torch.arange(4)
    in_batch = torch.tensor([1, 2, 3, 0, 0, 0, 0, 0])  # row i's hard one is row i+1's positive
    # a hard negative equal to a row's own code is masked for that row (the diagonal), and
    # counts as one more negative for the other rows
    own = torch.arange(8)
    qv, cv = m(q[rows], "query"), m(c[rows], "code")
    eye = torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(adapter_loss(m, q, c, rows, own),
                               info_nce(qv, cv, m.scale(), hard=cv, hard_mask=eye))
    assert info_nce(qv, cv, m.scale(), hard=cv) > adapter_loss(m, q, c, rows, own)
    want = info_nce(qv, cv, m.scale(), hard=m(c[in_batch[rows]], "code"),
                    hard_mask=rows[:, None] == in_batch[rows][None, :])
    torch.testing.assert_close(adapter_loss(m, q, c, rows, in_batch), want)


def test_reciprocal_rank_fusion_equals_hand_computed_values():
    a = torch.tensor([[3.0, 2.0, 1.0]])    # ranks 1, 2, 3
    b = torch.tensor([[0.1, 0.9, 0.5]])    # ranks 3, 1, 2
    fused = reciprocal_rank_fusion(a, b, k=1)
    want = [1 / 2 + 1 / 4, 1 / 3 + 1 / 2, 1 / 4 + 1 / 3]
    torch.testing.assert_close(fused[0], torch.tensor(want, dtype=torch.float64))
    # scale-free: multiplying one system's scores changes nothing
    torch.testing.assert_close(reciprocal_rank_fusion(a * 100, b), reciprocal_rank_fusion(a, b))
    with pytest.raises(ValueError, match="same"):
        reciprocal_rank_fusion(a, torch.zeros(1, 4))


def test_paired_bootstrap_interval():
    ranks_a = torch.tensor([1, 1, 2, 1, 3] * 20)
    diff, lo, hi = paired_bootstrap(ranks_a, ranks_a)
    assert diff == lo == hi == 0.0
    ranks_b = torch.tensor([2, 1, 2, 4, 3] * 20)
    diff, lo, hi = paired_bootstrap(ranks_a, ranks_b, n_resamples=500, seed=0)
    assert math.isclose(diff, mrr(ranks_a) - mrr(ranks_b)) and 0 < lo < diff < hi
    assert (diff, lo, hi) == paired_bootstrap(ranks_a, ranks_b, n_resamples=500, seed=0)
    assert (lo, hi) != paired_bootstrap(ranks_a, ranks_b, n_resamples=500, seed=1)[1:]
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(ranks_a, ranks_b[:5])
    assert math.isclose(random_mrr(3), (1 + 1 / 2 + 1 / 3) / 3)


def test_encode_of_a_code_search_asset_is_minilm_plus_its_adapter(tmp_path):
    from gptlib.embeddings import minilm_vectors

    torch.manual_seed(0)
    m = CodeSearchAdapter(384, 4)
    with torch.no_grad():
        m.code.B.normal_(std=0.1)
    assets.save("emb/cs", command="test", settings={}, metrics={}, wall_s=0, model=m,
                builder="gptlib.embeddings:CodeSearchAdapter.from_config",
                model_config={"dim": 384, "rank": 4}, root=tmp_path)
    texts = ["def add(a, b):\n    return a + b", "x" * (CODE_CHARS + 50)]
    got = encode("emb/cs", texts, kind="code", root=tmp_path)
    base = minilm_vectors([texts[0], texts[1][:CODE_CHARS]], cache=False)
    with torch.no_grad():
        want = m(base, "code").numpy()
    assert got.shape == (2, 384) and np.allclose(got, want, atol=1e-5)
    q = encode("emb/cs", ["Add two numbers"], kind="query", root=tmp_path)
    assert np.allclose(q, base[:1].numpy() * 0 + minilm_vectors(["Add two numbers"],
                                                                 cache=False).numpy(), atol=1e-5)
