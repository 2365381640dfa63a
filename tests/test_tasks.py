"""Tests for gptlib.tasks: task lines, the held-out split, the mixed corpus, exact-match scoring."""
from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gptlib import tasks
from gptlib.model import GPT, GPTConfig
from gptlib.tasks import (
    PARAPHRASES,
    TASKS,
    EvalResult,
    answer_logprob,
    count_task,
    evaluate_exact_match,
    evaluate_zero_shot,
    is_held_out,
    mix_tasks,
    sample_inputs,
    task_fraction,
)
from gptlib.tokenizer import CharTokenizer

# ----------------------------------------------------------------------------- tasks


def test_the_four_tasks_written_as_text():
    assert TASKS["reverse"].example("abc") == "reverse: abc = cba"
    assert TASKS["uppercase"].example("hello") == "uppercase: hello = HELLO"
    assert TASKS["sort"].example("dbca") == "sort: dbca = abcd"
    assert TASKS["count a"].example("banana") == "count a: banana = 3"
    assert TASKS["reverse"].prompt("abc") == "reverse: abc ="
    assert TASKS["reverse"].renamed("backwards").example("abc") == "backwards: abc = cba"
    assert set(PARAPHRASES) == set(TASKS)


def test_count_task_balances_the_counts():
    task = count_task("e")
    rng = random.Random(0)
    counts = Counter(task.solve(task.make_input(rng)) for _ in range(4000))
    assert set(counts) == {"0", "1", "2", "3"}
    assert min(counts.values()) > 600, counts  # each about a quarter
    with pytest.raises(ValueError):
        count_task("ab")


# ----------------------------------------------------------------------------- the split


def test_held_out_split_is_a_fixed_fifth():
    rng = random.Random(1)
    words = {"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5)) for _ in range(20000)}
    share = sum(map(is_held_out, words)) / len(words)
    assert 0.18 < share < 0.22
    # against an independent CRC-32 (binascii's, not zlib's) and the documented rule "crc % 5 == 0"
    import binascii

    for word in sorted(words)[:500]:
        assert is_held_out(word) == (binascii.crc32(word.encode()) % 5 == 0)
    assert any(is_held_out(w) for w in sorted(words)[:500])


@pytest.mark.parametrize("held_out", [True, False])
def test_sample_inputs_respects_the_split(held_out):
    for task in TASKS.values():
        xs = sample_inputs(task, 200, random.Random(2), held_out=held_out)
        assert len(set(xs)) == 200
        assert all(is_held_out(x) == held_out for x in xs)


def test_sample_inputs_says_when_it_runs_out():
    tiny = tasks.Task("tiny", str.upper, lambda rng: rng.choice("ab"))
    with pytest.raises(ValueError, match="fewer"):
        sample_inputs(tiny, 5, random.Random(0), held_out=False, max_tries=1000)


# ----------------------------------------------------------------------------- the corpus


TEXT = "A:\nline one\n\nB:\nline two\nline three\n\nC:\nlast"


def test_mix_tasks_inserts_lines_between_speeches_only():
    mixed = mix_tasks(TEXT, list(TASKS.values()), random.Random(0), rate=1.0, max_lines=3)
    blocks = mixed.split("\n\n")
    speeches = [b for b in blocks if b.split("\n")[0].split(":")[0] not in TASKS]
    assert "\n\n".join(speeches) == TEXT  # the play is intact, in order
    task_lines = [line for b in blocks if b not in speeches for line in b.split("\n")]
    assert len(task_lines) >= 3
    for line in task_lines:
        name, rest = line.split(": ", 1)
        x, y = rest.split(" = ")
        assert TASKS[name].solve(x) == y
        assert not is_held_out(x)  # evaluation inputs never appear in the corpus
    assert mix_tasks(TEXT, list(TASKS.values()), random.Random(0), rate=0.0) == TEXT
    assert mixed == mix_tasks(TEXT, list(TASKS.values()), random.Random(0), rate=1.0, max_lines=3)


def test_task_fraction():
    assert task_fraction(TEXT) == 0
    line = "sort: cba = abc"
    assert task_fraction(line) == pytest.approx((len(line) + 1) / len(line))
    assert 0 < task_fraction(TEXT + "\n\n" + line) < 0.5


@pytest.fixture(scope="module")
def dataset():
    from gptlib.data import DATASETS

    return DATASETS["shakespeare_tasks"](0.1, 0, None)


def test_shakespeare_tasks_dataset(dataset):
    tokenizer, train, val = dataset
    assert len(train) + len(val) == 38 and len(val) >= 1
    text = "".join(train.values())
    assert 0.2 < task_fraction(text) < 0.5
    for task in TASKS.values():
        assert f"\n{task.name}: " in text
    for paraphrase in (p for ps in PARAPHRASES.values() for p in ps):
        assert f"\n{paraphrase}: " not in text  # the paraphrases really are unseen
        tokenizer.encode(paraphrase)  # ... but can be written
    assert tokenizer.decode(tokenizer.encode(text[:5000])) == text[:5000]
    from gptlib.data.datasets import shakespeare_tasks

    again = shakespeare_tasks(0.1, 0)[1]
    assert list(again) == list(train) and again[next(iter(train))] == train[next(iter(train))]
    other = shakespeare_tasks(0.1, 1)
    # another seed draws other task lines (and holds out other plays)
    assert any(other[1].get(t) not in (None, train[t]) for t in train)


def test_the_cached_mixed_plays_are_what_mixing_gives(tmp_path, monkeypatch):
    """The disk cache of the mixed plays returns exactly a fresh mix (checked on two plays:
    the generator of each play is seeded from its title, so plays mix independently)."""
    from gptlib.data import datasets
    from gptlib.data.corpora import shakespeare_plays

    monkeypatch.setenv("GPTLIB_CACHE", str(tmp_path))
    plays = shakespeare_plays()
    titles = list(plays)[:2]
    for attempt in ("computed", "read back"):
        cached = datasets._cached_mixed_plays(3, 0.5, 4)
        assert list(cached) == list(plays), attempt
        for title in titles:
            fresh = mix_tasks(plays[title], list(TASKS.values()), random.Random(f"tasks/3/{title}"), 0.5, 4)
            assert cached[title] == fresh, attempt
    assert len(list(tmp_path.glob("*-tasks-s3-r0.5-m4-*.json"))) == 1


def test_train_val_tokens_knows_the_dataset():
    from gptlib.data import train_val_tokens

    tokenizer, train_ids, val_ids = train_val_tokens("shakespeare_tasks")
    assert train_ids.numel() > 4_000_000 and val_ids.numel() > 100_000
    assert tokenizer.vocab_size < 100


# ----------------------------------------------------------------------------- evaluation


class Oracle(nn.Module):
    """A fake character-level LM that continues "name: x =" with the right (or a wrong) answer."""

    def __init__(self, tokenizer, wrong: bool = False):
        super().__init__()
        self.tok = tokenizer
        self.wrong = wrong
        self.config = SimpleNamespace(block_size=64, vocab_size=tokenizer.vocab_size)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, idx, kv_cache=None):
        logits = torch.full((idx.shape[0], idx.shape[1], self.tok.vocab_size), -10.0)
        for b in range(idx.shape[0]):
            text = self.tok.decode(idx[b].tolist())
            line = text.split("\n")[-1]
            head, _, sofar = line.partition(" =")
            name, _, x = head.partition(": ")
            answer = TASKS[name].solve(x) if name in TASKS else "?"
            if self.wrong:
                answer = x
            target = f" {answer}\n"
            nxt = target[len(sofar)] if len(sofar) < len(target) else "\n"
            logits[b, -1, self.tok.encode(nxt)[0]] = 10.0
        return logits


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.from_text("\n =:?" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "0123456789")


def test_evaluate_zero_shot_with_an_oracle(char_tok):
    for task in TASKS.values():
        result = evaluate_zero_shot(Oracle(char_tok), char_tok, task, n=30, batch_size=7)
        assert isinstance(result, EvalResult)
        assert result.accuracy == 1.0, result.examples()
        assert all(is_held_out(p.split(": ")[1][:-2]) for p in result.prompts)
    wrong = evaluate_zero_shot(Oracle(char_tok, wrong=True), char_tok, TASKS["uppercase"], n=30)
    assert wrong.accuracy == 0.0
    assert "✗" in wrong.examples(2)
    # An unknown task name: the oracle answers "?", which is never right.
    para = evaluate_zero_shot(Oracle(char_tok), char_tok, TASKS["sort"].renamed("alphabetical"), n=10)
    assert para.accuracy == 0.0 and set(para.predictions) == {"?"}


def test_eval_result_scores():
    r = EvalResult(["q1", "q2", "q3"], ["abc", "abc", "3"], ["abc", "abx", "33"])
    assert r.correct == [True, False, False]
    assert r.accuracy == pytest.approx(1 / 3)
    assert r.char_accuracy == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert "accuracy=0.333" in repr(r)


def test_evaluate_exact_match_checks_its_arguments(char_tok):
    with pytest.raises(ValueError, match="answers"):
        evaluate_exact_match(Oracle(char_tok), char_tok, ["a"], [])


def test_answer_logprob_matches_a_manual_sum(char_tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=char_tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    prompt, answer = "reverse: abc =", " cba"
    ids = torch.tensor([char_tok.encode(prompt + answer)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0], -1)
    n = len(char_tok.encode(prompt))
    manual = sum(float(logp[n - 1 + i, t]) for i, t in enumerate(char_tok.encode(answer)))
    assert answer_logprob(model, char_tok, prompt, answer) == pytest.approx(manual, abs=1e-5)
    assert answer_logprob(model, char_tok, prompt, "") == 0.0
    assert model.training  # left as it was
