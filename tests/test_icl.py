"""gptlib.icl: prompts, task families with per-prompt labels, k-shot evaluation, few-shot vs fine-tuning."""

from __future__ import annotations

import random

import pytest
import torch

from gptlib import fewshot, icl, intents, scaling
from gptlib.model import GPT, GPTConfig
from gptlib.tasks import evaluate_exact_match


def test_build_prompt_zero_one_few_shot():
    assert icl.build_prompt([], "kqd") == "\nkqd="
    assert icl.build_prompt([("kqd", "7")], "bxa") == "\nkqd=7\nbxa="
    assert (
        icl.build_prompt([("a", "1"), ("b", "2")], "a", description="map") == "\nmap\na=1\nb=2\na="
    )
    with pytest.raises(ValueError, match="newline"):
        icl.build_prompt([("a\nb", "1")], "a")
    with pytest.raises(ValueError, match="query"):
        icl.build_prompt([], "a=b")


@pytest.mark.parametrize("name", sorted(icl.FAMILIES))
def test_every_family_redraws_its_mapping(name):
    family = icl.FAMILIES[name]
    rng = random.Random(0)
    tok = icl.icl_tokenizer()
    answers_by_prompt = []
    for _ in range(30):
        task = family.draw(rng)
        x = task.make_input(rng)
        y = task.solve(x)
        assert len(tok.encode(y)) == 1, (
            name,
            y,
        )  # one-token answers: argmax scoring is exact match
        assert y in family.labels
        tok.encode(x)  # every input is in the vocabulary
        answers_by_prompt.append(y)
    assert len(set(answers_by_prompt)) > 1, "labels must change from prompt to prompt"


def test_lookup_is_consistent_within_a_prompt_and_random_across():
    rng = random.Random(1)
    task = icl.lookup_family().draw(rng)
    xs = [task.make_input(rng) for _ in range(40)]
    # a prompt's map is a function: every input has one answer, five words get five distinct digits
    pairs = {(x, task.solve(x)) for x in xs}
    assert len({x for x, _ in pairs}) == len(pairs) == 5
    assert len({y for _, y in pairs}) == 5 and all(len(x) == 1 for x, _ in pairs)
    # with one-letter words covering the alphabet, the word "a" gets many different digits across prompts
    fam = icl.lookup_family(n_words=10, word_len=1)
    digits = set()
    for seed in range(60):
        try:
            digits.add(fam.draw(random.Random(seed)).solve("a"))
        except KeyError:  # "a" is not among this prompt's words
            pass
    assert len(digits) > 3


def test_linear_and_pick_solve_correctly():
    rng = random.Random(2)
    t = icl.linear_family().draw(rng)
    a, b = map(int, t.name.split()[1].replace("x", " ").replace("+", "").split())
    assert all(t.solve(str(x)) == str((a * x + b) % 10) for x in range(10))
    p = icl.pick_family().draw(rng)
    i = int(p.name.split()[1])
    assert p.solve("abcd") == "abcd"[i]


def test_intent_labels_and_out_of_scope():
    rng = random.Random(3)
    fam = icl.intent_family(
        in_scope=icl.SEED_INTENTS, out_of_scope=[icl.OUT_OF_SCOPE], oos_rate=0.5
    )
    task = fam.draw(rng)
    labels = task.labels
    assert set(labels) == set(icl.SEED_INTENTS) and len(set(labels.values())) == 4
    assert task.solve("给妈妈打电话") == labels["打电话"]
    assert task.solve("预约明天的会议室") == icl.NONE_LABEL
    with pytest.raises(ValueError, match="not a request"):
        task.solve("hello")
    prompt, answer, labels = intents.intent_prompt(random.Random(4), 2, icl.OUT_OF_SCOPE)
    assert answer == icl.NONE_LABEL and prompt.endswith("=") and prompt.count("\n") == 9
    icl.icl_tokenizer().encode(prompt)


def test_episode_and_answer_positions():
    tok = icl.icl_tokenizer()
    text, examples = icl.episode(icl.FAMILIES["intent"], random.Random(5), n_examples=6)
    ids = tok.encode(text)
    for pos, (_, y) in zip(icl.answer_positions(tok, examples), examples):
        assert tok.decode([ids[pos]]) == icl.SEP and tok.decode([ids[pos + 1]]) == y
    text, _ = icl.episode(icl.FAMILIES["lookup"], random.Random(5), n_chars=100)
    assert len(text) >= 100
    with pytest.raises(ValueError):
        icl.episode(icl.FAMILIES["lookup"], random.Random(5))


def test_batch_fn_is_reproducible_and_shifted():
    tok = icl.icl_tokenizer()
    fn = icl.icl_batch_fn(tok, 4, 32)
    x1, y1 = fn(torch.Generator().manual_seed(0))
    x2, _ = fn(torch.Generator().manual_seed(0))
    assert x1.shape == (4, 32) and torch.equal(x1, x2) and torch.equal(x1[:, 1:], y1[:, :-1])
    with pytest.raises(ValueError, match="unknown task families"):
        icl.icl_batch_fn(tok, 4, 32, mixture={"nope": 1.0})


def test_kshot_accuracy_agrees_with_explicit_prompts():
    torch.manual_seed(0)
    tok = icl.icl_tokenizer()
    model = GPT(
        GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=16)
    ).eval()
    fam = icl.FAMILIES["lookup"]
    for k in (0, 3):
        fast = icl.kshot_accuracy(model, tok, fam, [k], n=20, seed=1)
        slow = icl.kshot_accuracy_from_prompts(model, tok, fam, k, n=20, seed=1)
        # generated text ends at a newline; a one-token answer is right iff its first token is
        assert fast.at(k) == pytest.approx(
            sum(p[:1] == a for p, a in zip(slow.predictions, slow.answers)) / 20
        )
    with pytest.raises(ValueError, match="block_size"):
        icl.kshot_accuracy(model, tok, fam, [40], n=2)


def test_an_oracle_scores_perfectly_where_the_answer_is_in_context():
    """Within an episode the same input always gets the same answer: copying is always right."""
    rng = random.Random(0)
    text, examples = icl.episode(icl.FAMILIES["lookup"], rng, n_examples=12)
    seen, hits, total = {}, 0, 0
    for x, y in examples:
        if x in seen:
            total += 1
            hits += seen[x] == y
        seen[x] = y
    assert total > 0 and hits == total


def test_fit_power_law_recovers_a_known_law():
    n = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5]
    loss = [5.0 * x**-0.3 + 1.2 for x in n]
    fit = scaling.fit_power_law(n, loss)
    assert fit["alpha"] == pytest.approx(0.3, abs=0.02) and fit["c"] == pytest.approx(1.2, abs=0.05)
    pure = scaling.fit_power_law(n, [7 * x**-0.1 for x in n], with_offset=False)
    assert pure["alpha"] == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError):
        scaling.fit_power_law([1, 2], [1, 2])


def test_evaluate_intents_runs_and_is_bounded():
    tok = icl.icl_tokenizer()
    model = GPT(
        GPTConfig(vocab_size=tok.vocab_size, block_size=192, n_layer=1, n_head=1, n_embd=8)
    ).eval()
    res = intents.evaluate_intents(model, tok, [1], n=4)
    assert set(res[1]) == {"in_scope", "oos", "false_none"} and all(
        0 <= v <= 1 for v in res[1].values()
    )


def test_exact_match_is_reused_for_prompts():
    tok = icl.icl_tokenizer()
    model = GPT(
        GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=1, n_embd=8)
    ).eval()
    res = evaluate_exact_match(model, tok, [icl.build_prompt([("ab", "1")], "ab")], ["1"])
    assert len(res.predictions) == 1


class CopyOracle(torch.nn.Module):
    """A hand-made 'model': after ``key=`` it puts all its mass on the answer that followed the
    latest earlier ``key=``, and on the newline token otherwise. Its k-shot accuracy is exactly
    the share of episodes whose k-th key appeared before: computed independently below."""

    def __init__(self, tok, block_size=96):
        super().__init__()
        self.tok = tok
        self.config = type("C", (), {"block_size": block_size})()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        eq, nl = self.tok.encode("=")[0], self.tok.encode("\n")[0]
        out = torch.zeros(*idx.shape, self.tok.vocab_size)
        for b, row in enumerate(idx.tolist()):
            last = {}
            for t, tokid in enumerate(row):
                out[b, t, nl] = 1.0
                if tokid == eq and t >= 1:
                    key = row[t - 1]
                    if key in last:
                        out[b, t, nl] = 0.0
                        out[b, t, last[key]] = 1.0
                    if t + 1 < len(row):
                        last[key] = row[t + 1]
        return out * 20


def test_kshot_accuracy_of_a_copy_oracle_matches_an_independent_count():
    tok = icl.icl_tokenizer()
    fam = icl.FAMILIES["lookup"]
    shots = [0, 1, 4, 8]
    res = icl.kshot_accuracy(CopyOracle(tok), tok, fam, shots, n=50, seed=3)
    rng = random.Random("kshot/3/lookup")  # the episodes kshot_accuracy draws
    seen_before = {k: 0 for k in shots}
    for _ in range(50):
        _, examples = icl.episode(fam, rng, n_examples=max(shots) + 1)
        for k in shots:
            seen_before[k] += examples[k][0] in {x for x, _ in examples[:k]}
    assert res.accuracy == pytest.approx([seen_before[k] / 50 for k in shots])
    assert res.at(0) == 0 and res.at(8) > 0.7 and res.chance == pytest.approx(0.1)


def test_finetuning_changes_a_copy_only_and_learns_the_examples():
    torch.manual_seed(0)
    tok = icl.icl_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    examples = [("a", "3"), ("b", "7")]
    tuned = fewshot.finetune_on_examples(model, tok, examples, steps=60, lr=1e-2)
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # original untouched
    from gptlib.fewshot import first_answers

    assert first_answers(tuned, tok, [icl.build_prompt([], x) for x, _ in examples]) == ["3", "7"]
    with pytest.raises(ValueError, match="at least one example"):
        fewshot.finetune_on_examples(model, tok, [])


def test_fewshot_vs_finetune_shapes_and_seeds():
    torch.manual_seed(0)
    tok = icl.icl_tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16))
    fam = icl.FAMILIES["lookup"]
    a = fewshot.fewshot_vs_finetune(model, tok, fam, k=4, n_tasks=3, n_queries=4, steps=3, seed=0)
    b = fewshot.fewshot_vs_finetune(model, tok, fam, k=4, n_tasks=3, n_queries=4, steps=3, seed=0)
    assert set(a) == {"zero-shot", "few-shot", "fine-tuned"} and all(
        len(v) == 3 for v in a.values()
    )
    assert a == b
    # fine-tuned on 4 examples for 60 steps, the model answers queries whose key it was taught
    c = fewshot.fewshot_vs_finetune(
        model, tok, fam, k=8, n_tasks=3, n_queries=10, steps=60, lr=1e-2, seed=1
    )
    assert sum(c["fine-tuned"]) / 3 > sum(c["zero-shot"]) / 3 + 0.3, c


# --- bare pairs, intents by name, recurring tokens -----------------------------------------


class InductionOracle(torch.nn.Module):
    """A hand-made induction head: at every position it puts its mass on the token that
    followed the latest earlier occurrence of the current token, and on ``fallback`` when the
    token has not occurred before."""

    def __init__(self, tok, fallback="N", block_size=96):
        super().__init__()
        self.tok, self.fallback = tok, tok.encode(fallback)[0]
        self.config = type("C", (), {"block_size": block_size})()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        out = torch.zeros(*idx.shape, self.tok.vocab_size)
        for b, row in enumerate(idx.tolist()):
            after = {}
            for t, tokid in enumerate(row):
                out[b, t, after.get(tokid, self.fallback)] = 20.0
                if t + 1 < len(row):
                    after[tokid] = row[t + 1]
        return out


def test_pairs_format_prompts_episodes_and_positions():
    fam = icl.FAMILIES["pairs"]
    assert fam.prompt([("k", "7"), ("b", "2")], "k") == "k7b2k"
    assert icl.build_prompt([("k", "7")], "k", sep="", end="") == "k7k"
    assert fam.prompt([], "k") == "k"
    tok = icl.icl_tokenizer()
    text, examples = icl.episode(fam, random.Random(0), n_examples=6)
    assert text == "".join(x + y for x, y in examples) and len(text) == 12
    ids = tok.encode(text)
    for pos, (x, y) in zip(icl.answer_positions(tok, examples, "", ""), examples):
        assert tok.decode([ids[pos]]) == x and tok.decode([ids[pos + 1]]) == y
    assert 16 in icl.shots_that_fit("pairs", 34) and 16 not in icl.shots_that_fit("pairs", 33)


def test_kshot_accuracy_on_pairs_of_an_induction_oracle_matches_an_independent_count():
    tok = icl.icl_tokenizer()
    fam = icl.FAMILIES["pairs"]
    shots = [0, 1, 2, 4, 8, 16]
    res = icl.kshot_accuracy(InductionOracle(tok), tok, fam, shots, n=60, seed=4)
    rng = random.Random("kshot/4/pairs")
    seen = {k: 0 for k in shots}
    for _ in range(60):
        _, examples = icl.episode(fam, rng, n_examples=max(shots) + 1)
        for k in shots:
            seen[k] += examples[k][0] in {x for x, _ in examples[:k]}
    assert res.accuracy == pytest.approx([seen[k] / 60 for k in shots])
    assert res.at(0) == 0 and res.at(8) - res.at(0) > 0.7


def test_intents_by_name_an_induction_oracle_reads_labels_and_detects_out_of_scope():
    tok = icl.icl_tokenizer()
    prompt, answer, labels = intents.intent_prompt(
        random.Random(1), 1, icl.OUT_OF_SCOPE, fmt="names"
    )
    assert answer == icl.NONE_LABEL and prompt.endswith(icl.OUT_OF_SCOPE)
    assert all(f"{name}{letter}" in prompt for name, letter in labels.items())
    with pytest.raises(ValueError, match="fmt"):
        intents.intent_prompt(random.Random(1), 1, icl.OUT_OF_SCOPE, fmt="nope")
    res = intents.evaluate_intents(InductionOracle(tok), tok, [0, 1, 3], n=20, fmt="names")
    assert res[0] == pytest.approx({"in_scope": 0.0, "oos": 1.0, "false_none": 1.0})
    for k in (1, 3):
        assert res[k]["in_scope"] == pytest.approx(1.0) and res[k]["oos"] == pytest.approx(1.0)
        assert res[k]["false_none"] == 0.0
    fam = icl.FAMILIES["intent names"]
    task = fam.draw(random.Random(2))
    outside = [i for i in icl.INTENTS if i not in task.labels]
    assert task.solve(outside[0]) == icl.NONE_LABEL and len(set(task.labels.values())) == 4
    # the last characters of the names differ: a match on the token before the label suffices
    assert len({name[-1] for name in icl.INTENTS}) == len(icl.INTENTS)


def test_batch_fn_mixes_in_recurring_tokens():
    tok = icl.icl_tokenizer()
    fn = icl.icl_batch_fn(tok, 8, 34, {"pairs": 1.0}, recurring=0.5)
    x, y = fn(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 34) and torch.equal(x[:, 1:], y[:, :-1])
    digits = set(tok.encode(icl.DIGITS))
    assert all(int(t) in digits for t in x[:4, 1::2].flatten())  # pairs rows: labels at odd
    assert not all(int(t) in digits for t in x[4:, 1::2].flatten())  # random tokens
    with pytest.raises(ValueError, match="recurring"):
        icl.icl_batch_fn(tok, 8, 34, recurring=1.0)


def test_the_attention_only_model_plugs_into_kshot_intents_and_finetuning():
    from gptlib.induction import AttnOnly, AttnOnlyConfig

    tok = icl.icl_tokenizer()
    torch.manual_seed(0)
    model = AttnOnly(AttnOnlyConfig(vocab_size=tok.vocab_size, block_size=40, n_embd=16))
    r = icl.kshot_accuracy(model, tok, icl.FAMILIES["pairs"], [0, 16], n=4)
    assert r.chance == pytest.approx(0.1) and 0 <= r.at(16) <= 1
    intents.evaluate_intents(model, tok, [1], n=2, fmt="names")
    fam = icl.FAMILIES["pairs"]
    tuned = fewshot.finetune_on_examples(model, tok, [("a", "3"), ("b", "7")], 60, 1e-2, fam)
    assert fewshot.first_answers(tuned, tok, ["a", "b"]) == ["3", "7"]
