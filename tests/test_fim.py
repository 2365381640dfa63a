"""gptlib.fim, gptlib.toycode, gptlib.edit: the FIM transform, the corpus, infills, edits."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from gptlib import edit, fim, toycode
from gptlib.fim import EOT, MID, PRE, SUF
from gptlib.model import GPT, GPTConfig

DOC = 'def f(x):\n    """Double x."""\n    y = x * 2\n    return y\n'


def test_split_document_covers_the_document():
    rng = random.Random(0)
    for _ in range(200):
        prefix, middle, suffix = fim.split_document(DOC, rng)
        assert prefix + middle + suffix == DOC


def test_line_split_cuts_between_lines():
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        prefix, middle, suffix = fim.split_document(DOC, rng, unit="line")
        assert prefix + middle + suffix == DOC
        for part in (prefix, middle):
            assert part == "" or part.endswith("\n")
        seen.add((len(prefix), len(middle)))
    assert len(seen) == 15  # 5 boundaries (0, three line starts, the end): 5 * 6 / 2 ordered pairs
    with pytest.raises(ValueError, match="unit"):
        fim.split_document(DOC, rng, unit="token")
    texts = fim.apply_fim([DOC] * 50, 1.0, seed=0, unit="line")
    assert all(fim.undo_fim(t) == DOC for t in texts)


def test_psm_is_a_permutation_of_the_characters_plus_sentinels():
    rng = random.Random(1)
    for _ in range(100):
        out = fim.fim_transform(DOC, rng, "psm")
        assert Counter(out) == Counter(DOC) + Counter(PRE + SUF + MID + EOT)
        assert out.startswith(PRE) and out.endswith(EOT)
        assert out.index(PRE) < out.index(SUF) < out.index(MID)


def test_psm_and_spm_layouts():
    assert fim.psm("ab", "cd", "ef") == PRE + "ab" + SUF + "ef" + MID + "cd" + EOT
    assert fim.spm("ab", "cd", "ef") == PRE + SUF + "ef" + MID + "abcd" + EOT


@pytest.mark.parametrize("spm_rate", [0.0, 0.5, 1.0])
def test_round_trip(spm_rate):
    docs = [t.source for t in toycode.function_corpus(50, seed=3)] + ["", "x"]
    for text, doc in zip(fim.apply_fim(docs, 0.7, seed=0, spm_rate=spm_rate), docs):
        assert fim.undo_fim(text) == doc


def test_fim_rate_is_honoured():
    docs = ["abc def ghi"] * 4000
    for rate in (0.0, 0.5, 0.9, 1.0):
        out = fim.apply_fim(docs, rate, seed=0)
        share = sum(t.startswith(PRE) for t in out) / len(out)
        assert abs(share - rate) < 0.03, (rate, share)
        assert all(t.endswith(EOT) for t in out)


def test_apply_fim_is_seeded():
    docs = [t.source for t in toycode.function_corpus(20, seed=0)]
    assert fim.apply_fim(docs, 0.5, seed=4) == fim.apply_fim(docs, 0.5, seed=4)
    assert fim.apply_fim(docs, 0.5, seed=4) != fim.apply_fim(docs, 0.5, seed=5)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="FIM rate"):
        fim.apply_fim(["a"], 1.5)
    with pytest.raises(ValueError, match="sentinel"):
        fim.apply_fim(["a" + MID], 0.5)
    with pytest.raises(ValueError, match="mode"):
        fim.fim_prompt("a", "b", mode="pms")
    with pytest.raises(ValueError, match="EOT"):
        fim.undo_fim("abc")


def test_fim_prompt_is_the_training_format_up_to_the_middle():
    prefix, middle, suffix = "def f(x):\n", "    y = x\n", "    return y\n"
    assert fim.psm(prefix, middle, suffix) == fim.fim_prompt(prefix, suffix) + middle + EOT
    assert fim.spm(prefix, middle, suffix) == fim.fim_prompt(prefix, suffix, "spm") + middle + EOT


def test_tokenizer_and_show():
    tok = fim.fim_tokenizer()
    text = fim.psm("a(b)", "c\n", "d")
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode(EOT)[0] == tok.vocab_size - 1
    assert fim.show(text) == "<PRE>a(b)<SUF>d<MID>c\n<EOT>"


def test_function_corpus_programs_pass_and_are_distinct():
    tasks = toycode.function_corpus(60, seed=0)
    assert len({t.source for t in tasks}) == 60
    assert {t.template for t in tasks} == set(range(10))
    for t in tasks:
        exec(t.program, {})  # every template's code agrees with the reference behind its tests
    held_out = toycode.function_corpus(30, seed=1, exclude={t.source for t in tasks})
    assert not {t.source for t in held_out} & {t.source for t in tasks}
    assert toycode.function_corpus(10, seed=0) == tasks[:10]
    assert toycode.function_corpus(10, seed=9) != tasks[:10]


def test_name_pool_is_200_distinct_identifiers():
    assert len(set(toycode.NAMES)) == 200
    assert all(n.isidentifier() for n in toycode.NAMES)
    accs = {t.acc for t in toycode.function_corpus(3000, seed=0)}
    assert len(accs) == 200  # every name is used: the pool really is ~uniform


def test_bind_hole_is_the_first_use_of_the_name():
    for task in toycode.function_corpus(50, seed=2):
        hole = toycode.make_hole(task, "bind")
        assert hole.filled(hole.middle) == task.source
        assert task.acc not in hole.prefix  # nothing above the hole says the name
        assert hole.middle.startswith("    " + task.acc + " = ")
        assert hole.suffix.count(task.acc) >= 2  # everything below uses it


def test_holes_cut_whole_lines():
    rng = random.Random(0)
    for task in toycode.function_corpus(30, seed=2):
        for kind in ("line", "lines", "body"):
            hole = toycode.make_hole(task, kind, rng)
            assert hole.prefix + hole.middle + hole.suffix == task.source
            assert hole.middle.endswith("\n") and hole.prefix.count("\n") >= 2
            assert hole.n_lines == {"line": 1}.get(kind, hole.n_lines)
        body = toycode.make_hole(task, "body", rng)
        assert body.suffix.strip().startswith("return")
        r = toycode.random_hole(task, rng)
        assert r.middle and r.prefix + r.middle + r.suffix == task.source
    with pytest.raises(ValueError, match="rng"):
        toycode.make_hole(task, "line")
    with pytest.raises(ValueError, match="kind"):
        toycode.make_hole(task, "word", rng)


def test_edits_are_correct_programs():
    examples = edit.edit_dataset(40, seed=0)
    assert [e.kind for e in examples[:4]] == list(edit.EDIT_KINDS)
    for e in examples:
        compile(e.after, "<edit>", "exec")
        assert e.before != e.after
        text = edit.edit_text(e)
        assert text.startswith(e.before) and "# instruction: " + e.instruction + "\n" in text
        if e.kind == "rename":
            old, new = e.instruction.split()[1], e.instruction.split()[3]
            assert new in toycode.NAMES and new in e.after
            assert not any(w == old for w in e.after.replace("(", " ").split())
    with pytest.raises(ValueError, match="one line"):
        edit.edit_prompt("x = 1\n", "two\nlines")


def _tiny_model(tok, block_size=64):
    torch.manual_seed(0)
    return GPT(
        GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=1, n_embd=16)
    ).eval()


def test_infill_and_baseline_run_and_respect_budgets():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    out = fim.infill(model, tok, "def f(x):\n", "    return y\n", max_new_tokens=7)
    assert isinstance(out, str) and len(out) <= 7 and EOT not in out
    lines = fim.complete_lines(model, tok, "def f(x):\n", n_lines=2, max_new_tokens=30)
    assert lines.count("\n") <= 2 and len(lines) <= 32
    # A long prompt is cropped to the model's context instead of failing.
    assert isinstance(fim.infill(model, tok, "x = 1\n" * 30, "y\n", max_new_tokens=3), str)


def test_middle_nll_is_the_summed_cross_entropy_of_the_middle():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    hole = toycode.Hole("def f(x):\n", "    y = x\n", "    return y\n", "line")
    for how, context in (
        ("l2r", EOT + hole.prefix),
        ("fim", EOT + PRE + hole.prefix + SUF + hole.suffix + MID),
    ):
        ids = tok.encode(context + hole.middle)
        logits = model(torch.tensor([ids[:-1]]))[0, -len(hole.middle) :]
        ref = torch.nn.functional.cross_entropy(
            logits, torch.tensor(ids[-len(hole.middle) :]), reduction="sum"
        ).item()
        assert abs(fim.middle_nll(model, tok, [hole], how)[0].item() - ref) < 1e-4
    with pytest.raises(ValueError, match="how"):
        fim.middle_nll(model, tok, [hole], "both")
    # an untrained model is near uniform: about ln(vocab) per character
    nll = fim.middle_nll(model, tok, [hole], "l2r")[0].item()
    assert abs(nll / len(hole.middle) - math.log(tok.vocab_size)) < 0.5


def test_compare_infilling_with_given_models_and_fresh_seeds():
    tok = fim.fim_tokenizer()
    a, b = _tiny_model(tok, 256), _tiny_model(tok, 256)
    out = fim.compare_infilling(6, seed=3, models={"fim": a, "l2r": b}, tokenizer=tok, train_n=50)
    assert set(out) >= {"fim", "l2r", "gap", "gap_ci95", "per_middle"}
    assert len(out["per_middle"]["fim"]) == 6
    assert abs(out["gap"] - (out["l2r"] - out["fim"])) < 1e-6
    lo, hi = out["gap_ci95"]
    assert lo <= out["gap"] <= hi
    again = fim.compare_infilling(6, seed=3, models={"fim": a, "l2r": b}, tokenizer=tok, train_n=50)
    other = fim.compare_infilling(6, seed=4, models={"fim": a, "l2r": b}, tokenizer=tok, train_n=50)
    assert again["fim"] == out["fim"] and other["fim"] != out["fim"]
    with pytest.raises(ValueError, match="training seed"):
        fim.held_out_tasks(3, seed=0, train_n=10)


def test_pass_rate_with_a_perfect_and_a_broken_filler():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    tasks = toycode.function_corpus(3, seed=5)

    def run_locally(programs):
        class R:
            def __init__(self, ok):
                self.passed = ok

        out = []
        for p in programs:
            try:
                exec(p, {})
                out.append(R(True))
            except Exception:
                out.append(R(False))
        return out

    fills = []
    rate = fim.pass_rate(
        model, tok, tasks, "fim", kind="bind", execute_many=run_locally, fills=fills
    )
    assert rate == 0.0 and len(fills) == 3  # an untrained model writes noise
    with pytest.raises(ValueError, match="how"):
        fim.pass_rate(model, tok, tasks, "rtl", execute_many=run_locally)


def test_best_of_m_keeps_the_likeliest_candidate():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok, 128)
    hole = toycode.make_hole(toycode.function_corpus(1, seed=6)[0], "bind")
    res = fim.best_of_m(model, tok, hole, 5, seed=0)
    assert len(res.candidates) == 5 and res.fill in res.candidates
    assert res.scores[res.candidates.index(res.fill)] == max(res.scores)
    assert res.generated_tokens > 0 and res.scored_tokens >= 5 * len(tok.encode(hole.suffix))
    assert all(c.count("\n") <= 1 for c in res.candidates)
    assert fim.best_of_m(model, tok, hole, 5, seed=0).candidates == res.candidates
    assert fim.best_of_m(model, tok, hole, 5, seed=1).candidates != res.candidates


def test_left_to_right_loss_matches_cross_entropy():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok, 32)
    docs = [t.source for t in toycode.function_corpus(4, seed=0)]
    data = fim.build_stream(docs, tok, 0.0).long()
    n = (data.numel() - 1) // 32
    x, y = data[: n * 32].view(n, 32), data[1 : n * 32 + 1].view(n, 32)
    ref = torch.nn.functional.cross_entropy(
        model(x).reshape(-1, tok.vocab_size), y.reshape(-1)
    ).item()
    assert abs(fim.left_to_right_loss(model, tok, docs) - ref) < 1e-5
    # skip_first: the same, without each document's first token (the one after <EOT>)
    keep = (x != tok.encode(EOT)[0]).reshape(-1)
    per_token = torch.nn.functional.cross_entropy(
        model(x).reshape(-1, tok.vocab_size), y.reshape(-1), reduction="none"
    )
    assert 0 < (~keep).sum() < keep.sum()
    ref = per_token[keep].mean().item()
    assert abs(fim.left_to_right_loss(model, tok, docs, skip_first=True) - ref) < 1e-5


def test_gptlib_fim_is_reachable_as_an_attribute():
    import gptlib

    assert gptlib.fim is fim and gptlib.toycode is toycode and gptlib.edit is edit


def test_edit_applied_accepts_the_target_and_rejects_the_input():
    examples = edit.edit_dataset(40, seed=0)
    assert all(edit.edit_applied(e, e.after) for e in examples)
    assert not any(edit.edit_applied(e, e.before) for e in examples)
    rename = next(e for e in examples if e.kind == "rename")
    old, new = rename.instruction.split()[1], rename.instruction.split()[3]
    # the new name everywhere but one old use left: not applied
    half = rename.after.replace(new, old, 1)
    assert not edit.edit_applied(rename, half)
    # the change made, the rest garbled: applied (but not an exact match)
    ret = next(e for e in examples if e.kind == "return")
    garbled = "def g(q):\n" + ret.after.splitlines(keepends=True)[-1]
    assert edit.edit_applied(ret, garbled) and garbled != ret.after


def test_extend_positions_keeps_the_model_on_its_old_positions():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = GPT(cfg).eval()
    longer = edit.extend_positions(model, 40).eval()
    assert longer.config.block_size == 40 and longer.wpe.weight.shape[0] == 40
    idx = torch.randint(100, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], longer(idx)[0], atol=1e-6)
        longer(torch.randint(100, (1, 40)))  # the new positions are usable
    with pytest.raises(ValueError, match="smaller than the model's 16"):
        edit.extend_positions(model, 8)


def test_edit_batches_start_at_a_document_and_hold_it_whole():
    tok = fim.fim_tokenizer()
    examples = edit.edit_dataset(12, seed=0)
    block = max(len(edit.edit_text(e)) for e in examples) + 2
    batch_fn = edit.edit_batches(examples, tok, block, batch_size=6)
    x, y = batch_fn(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, block)
    assert torch.equal(x[:, 1:], y[:, :-1])
    texts = {edit.edit_text(e) for e in examples}
    for row in x.tolist():
        text = tok.decode(row)
        assert text.startswith(EOT)
        assert text[1:].split(EOT)[0] in texts  # a whole document after the <EOT>
    with pytest.raises(ValueError, match="cannot hold the longest edit document"):
        edit.edit_batches(examples, tok, block - 2, batch_size=2)


def test_exact_match_ci95_is_wilson_and_checks_lengths():
    examples = edit.edit_dataset(8, seed=0)  # two of each kind
    ci = edit.exact_match_ci95(examples, [e.after for e in examples])
    assert ci["all"][1] == 1.0 and 0.6 < ci["all"][0] < 0.7  # Wilson, 8 of 8: [0.676, 1]
    ci = edit.exact_match_ci95(examples, [e.before for e in examples])
    assert all(lo == 0.0 and 0.0 < hi < 1.0 for lo, hi in ci.values())
    with pytest.raises(ValueError, match="8 examples but 7 outputs"):
        edit.exact_match_ci95(examples, [e.after for e in examples[:7]])
