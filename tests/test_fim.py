"""gptlib.fim: the FIM transform, prompts, the seeded corpora, infilling and editing plumbing."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from gptlib import fim
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
    docs = [t.source for t in fim.function_corpus(50, seed=3)] + ["", "x"]
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
    docs = [t.source for t in fim.function_corpus(20, seed=0)]
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
    tasks = fim.function_corpus(60, seed=0)
    assert len({t.source for t in tasks}) == 60
    assert {t.template for t in tasks} == set(range(10))
    for t in tasks:
        exec(t.program, {})  # every template's code agrees with the reference behind its tests
    held_out = fim.function_corpus(30, seed=1, exclude={t.source for t in tasks})
    assert not {t.source for t in held_out} & {t.source for t in tasks}


def test_holes_cut_whole_lines():
    rng = random.Random(0)
    for task in fim.function_corpus(30, seed=2):
        for kind in ("line", "lines", "body"):
            hole = fim.make_hole(task, kind, rng)
            assert hole.prefix + hole.middle + hole.suffix == task.source
            assert hole.middle.endswith("\n") and hole.prefix.count("\n") >= 2
            assert hole.n_lines == {"line": 1}.get(kind, hole.n_lines)
        body = fim.make_hole(task, "body", rng)
        assert body.suffix.strip().startswith("return")


def test_edits_are_correct_programs():
    examples = fim.edit_dataset(40, seed=0)
    assert [e.kind for e in examples[:4]] == list(fim.EDIT_KINDS)
    for e in examples:
        compile(e.after, "<edit>", "exec")
        text = fim.edit_text(e)
        assert text.startswith(e.before) and "# instruction: " + e.instruction + "\n" in text
        if e.kind == "rename":
            old, new = e.instruction.split()[1], e.instruction.split()[3]
            assert new in e.after and not any(w == old for w in e.after.replace("(", " ").split())
    with pytest.raises(ValueError, match="one line"):
        fim.edit_prompt("x = 1\n", "two\nlines")


def _tiny_model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=16)).eval()


def test_infill_and_baseline_run_and_respect_budgets():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    out = fim.infill(model, tok, "def f(x):\n", "    return y\n", max_new_tokens=7)
    assert isinstance(out, str) and len(out) <= 7 and EOT not in out
    lines = fim.complete_lines(model, tok, "def f(x):\n", n_lines=2, max_new_tokens=30)
    assert lines.count("\n") <= 2 and len(lines) <= 32
    # A long prompt is cropped to the model's context instead of failing.
    assert isinstance(fim.infill(model, tok, "x = 1\n" * 30, "y\n", max_new_tokens=3), str)


def test_evaluate_infilling_scores_a_perfect_filler():
    tasks = fim.function_corpus(5, seed=0)
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    res = fim.evaluate_infilling(model, tok, tasks, "fim", kinds=("line",), max_new_tokens=4)
    assert res.n == {"line": 5} and 0.0 <= res.exact["line"] <= 1.0 and res.pass_rate is None
    with pytest.raises(ValueError, match="how"):
        fim.evaluate_infilling(model, tok, tasks, "rtl")


def test_lm_val_loss_matches_cross_entropy():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    data = fim.build_stream([t.source for t in fim.function_corpus(10, seed=0)], tok, 0.0)
    loss = fim.lm_val_loss(model, data, block_size=32, max_windows=3)
    x = data[:96].long().view(3, 32)
    y = data[1:97].long().view(3, 32)
    ref = torch.nn.functional.cross_entropy(model(x).reshape(-1, tok.vocab_size), y.reshape(-1)).item()
    assert abs(loss - ref) < 1e-5


def test_training_recipe_runs_tiny():
    model, tok, result = fim.train_fim_model("fim", dict(fim.RUNS["tiny"], max_iters=3, n_train=50), device="cpu")
    assert result.iters == 3 and model.config.vocab_size == tok.vocab_size
    with pytest.raises(ValueError, match="init"):
        fim.train_fim_model("edit", "tiny")


def test_middle_loss_scores_only_the_middle():
    tok = fim.fim_tokenizer()
    model = _tiny_model(tok)
    hole = fim.Hole("def f(x):\n", "    y = x\n", "    return y\n", "line")
    ids = tok.encode(EOT + hole.prefix + hole.middle)
    logits = model(torch.tensor([ids[:-1]]))[0, -len(hole.middle):]
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[-len(hole.middle):])).item()
    assert abs(fim.middle_loss(model, tok, hole, "l2r") - ref) < 1e-5
    assert fim.middle_loss(model, tok, hole, "fim", mode="spm") > 0
    with pytest.raises(ValueError, match="how"):
        fim.middle_loss(model, tok, hole, "both")
