"""Tasks written as text: the multitask corpus of GPT-2's zero-shot experiments, in miniature.

GPT-2's claim (Radford et al., 2019) is that a language model trained on enough ordinary text
meets many tasks *already written out as text* — "translate to French: cheese = fromage",
a question followed by its answer — and so learns to do them, with no fine-tuning: at test
time the task is asked in the same words, and the model continues the text with the answer.

This module makes that claim testable at toy scale. A :class:`Task` is a small string
function with a name, written as one line of text::

    reverse: abc = cba
    uppercase: hello = HELLO
    sort: dbca = abcd
    count a: banana = 3

:func:`mix_tasks` scatters such lines, drawn with a seed, between the speeches of
Shakespeare's plays; :func:`gptlib.data.datasets.shakespeare_tasks` is the resulting dataset
(``train_val_tokens("shakespeare_tasks")``, so ``python -m gptlib.train`` can train on it).
After pre-training, :func:`evaluate_zero_shot` prompts ``"reverse: xyz ="``, greedy-decodes
until the end of the line and scores exact matches.

Inputs are split once and for all: :func:`is_held_out` reserves a fixed fifth of all strings
(chosen by a hash, not by a seed) for evaluation, and the corpus never contains them, so
every evaluated input is new to the model. What the model can have learned is the *task*,
not the answer.

The pieces are general, for the chapters that build on them (in-context learning puts
several solved examples before the question): :meth:`Task.example` and :meth:`Task.prompt`
write one line, :meth:`Task.renamed` asks the same task in other words (a paraphrase the
model never saw), :func:`evaluate_exact_match` scores any list of prompts and answers, and
:func:`answer_logprob` scores a given answer by its likelihood instead of decoding one.
"""

from __future__ import annotations

import random
import string
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import torch

from gptlib.evaluate import continuation_logprobs

__all__ = [
    "Task",
    "TASKS",
    "PARAPHRASES",
    "reverse_task",
    "uppercase_task",
    "sort_task",
    "count_task",
    "is_held_out",
    "sample_inputs",
    "mix_tasks",
    "task_fraction",
    "EvalResult",
    "evaluate_exact_match",
    "evaluate_zero_shot",
    "answer_logprob",
]

LETTERS = string.ascii_lowercase
#: One task line is ``f"{name}{NAME_SEP}{input}{ANSWER_SEP}{answer}"``; a prompt stops after
#: ``ANSWER_SEP.rstrip()``.
NAME_SEP = ": "
ANSWER_SEP = " = "
#: Share of all input strings kept out of the corpus for evaluation (see :func:`is_held_out`).
HELD_OUT_MODULUS = 5


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


def _random_word(rng: random.Random, min_len: int = 3, max_len: int = 4) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len)))


@dataclass(frozen=True)
class Task:
    """A string-to-string task and the words that name it in the text.

    ``name`` is written before the input (``"reverse"``, ``"count a"``), ``solve`` gives the
    answer, ``make_input(rng)`` draws an input. One solved example is one line of text::

        >>> reverse_task().example("abc")
        'reverse: abc = cba'
        >>> reverse_task().prompt("abc")
        'reverse: abc ='
    """

    name: str
    solve: Callable[[str], str] = field(compare=False)
    make_input: Callable[[random.Random], str] = field(default=_random_word, compare=False)

    def example(self, x: str) -> str:
        """The solved example ``"name: x = answer"`` (one line, no newline)."""
        return f"{self.name}{NAME_SEP}{x}{ANSWER_SEP}{self.solve(x)}"

    def prompt(self, x: str) -> str:
        """The question ``"name: x ="``: the model's continuation should be ``" answer\\n"``."""
        return f"{self.name}{NAME_SEP}{x}{ANSWER_SEP.rstrip()}"

    def renamed(self, name: str) -> "Task":
        """The same task asked in other words (e.g. ``"backwards"`` for ``"reverse"``)."""
        return replace(self, name=name)

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


def reverse_task() -> Task:
    """``reverse: abc = cba``."""
    return Task("reverse", lambda x: x[::-1])


def uppercase_task() -> Task:
    """``uppercase: hello = HELLO``."""
    return Task("uppercase", str.upper)


def sort_task() -> Task:
    """``sort: dbca = abcd`` (the letters in alphabetical order, repeats kept)."""
    return Task("sort", lambda x: "".join(sorted(x)))


def count_task(letter: str = "a", min_len: int = 3, max_len: int = 6, max_count: int = 3) -> Task:
    """``count a: banana = 3``: how many times ``letter`` occurs in the input.

    Random strings rarely repeat a letter, so inputs are drawn to make every count from 0 to
    ``max_count`` equally likely: the count first, then the other letters.
    """
    if len(letter) != 1 or letter not in LETTERS:
        raise ValueError(f"count_task needs one lower-case letter, got {letter!r}")
    others = LETTERS.replace(letter, "")

    def make_input(rng: random.Random) -> str:
        n = rng.randint(min_len, max_len)
        k = rng.randint(0, min(max_count, n))
        chars = [letter] * k + [rng.choice(others) for _ in range(n - k)]
        rng.shuffle(chars)
        return "".join(chars)

    return Task(f"count {letter}", lambda x: str(x.count(letter)), make_input)


#: The tasks written into the training corpus, by name.
TASKS: dict[str, Task] = {
    t.name: t for t in (reverse_task(), uppercase_task(), sort_task(), count_task("a"))
}

#: Other words for the same tasks, never written in the corpus: asking with them tests whether
#: the model learned what the task *is* or only the exact words that name it.
PARAPHRASES: dict[str, list[str]] = {
    "reverse": ["Reverse", "backwards"],
    "uppercase": ["Uppercase", "capitals"],
    "sort": ["Sort", "alphabetical"],
    "count a": ["Count a", "how many a"],
}


# --------------------------------------------------------------------------------------
# Inputs: a fixed split between training and evaluation
# --------------------------------------------------------------------------------------


def is_held_out(x: str) -> bool:
    """True for the fifth of all strings reserved for evaluation (by CRC-32, not by a seed).

    Because the split depends on the string only, it is the same in every corpus and every
    evaluation: the corpus generator skips these strings, the evaluator uses only them.
    """
    return zlib.crc32(x.encode("utf-8")) % HELD_OUT_MODULUS == 0


def sample_inputs(
    task: Task,
    n: int,
    rng: random.Random,
    held_out: bool,
    unique: bool = True,
    max_tries: int = 1_000_000,
) -> list[str]:
    """``n`` inputs of ``task`` on the requested side of the split (distinct if ``unique``)."""
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(max_tries):
        if len(out) == n:
            return out
        x = task.make_input(rng)
        if is_held_out(x) != held_out or (unique and x in seen):
            continue
        seen.add(x)
        out.append(x)
    raise ValueError(f"could only draw {len(out)} of {n} inputs for {task!r}: ask for fewer")


# --------------------------------------------------------------------------------------
# The corpus: task lines mixed into Shakespeare
# --------------------------------------------------------------------------------------


def mix_tasks(
    text: str, tasks: Sequence[Task], rng: random.Random, rate: float = 1.0, max_lines: int = 4
) -> str:
    """Insert blocks of task lines between the speeches of ``text`` (speeches end at a blank line).

    After each speech, with probability ``rate``, a block of 1 to ``max_lines`` lines follows,
    each line a solved example of a task drawn uniformly from ``tasks``, on an input from the
    training side of the split. The result reads like this::

        ROMEO:
        Give me my sin again.

        sort: qmzd = dmqz
        count a: xaafb = 2

        JULIET:
        You kiss by the book.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    blocks = text.split("\n\n")
    out: list[str] = []
    for block in blocks:
        out.append(block)
        if rng.random() < rate:
            lines = []
            for _ in range(rng.randint(1, max_lines)):
                task = rng.choice(tasks)
                lines.append(task.example(sample_inputs(task, 1, rng, held_out=False)[0]))
            out.append("\n".join(lines))
    return "\n\n".join(out)


def task_fraction(text: str, tasks: Iterable[Task] = TASKS.values()) -> float:
    """Share of the characters of ``text`` that are on task lines (for reporting the mixture)."""
    prefixes = tuple(t.name + NAME_SEP for t in tasks)
    task_chars = sum(
        len(line) + 1
        for line in text.split("\n")
        if line.startswith(prefixes) and ANSWER_SEP in line
    )
    return task_chars / max(1, len(text))


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Exact-match scores: ``accuracy`` and, per example, the prompt, answer and prediction."""

    prompts: list[str]
    answers: list[str]
    predictions: list[str]

    @property
    def correct(self) -> list[bool]:
        return [p == a for p, a in zip(self.predictions, self.answers)]

    @property
    def accuracy(self) -> float:
        """Share of exact matches: all or nothing per example."""
        return sum(self.correct) / max(1, len(self.answers))

    @property
    def char_accuracy(self) -> float:
        """Partial credit: share of answer characters right at their position.

        Each example scores ``#{i : pred[i] == answer[i]} / max(len(pred), len(answer))``, so
        extra or missing characters cost too. Exact match jumps from 0 to 1 only when *every*
        character is right; this score shows progress before that happens.
        """
        scores = [
            sum(p == a for p, a in zip(pred, ans)) / max(1, len(pred), len(ans))
            for pred, ans in zip(self.predictions, self.answers)
        ]
        return sum(scores) / max(1, len(scores))

    def examples(self, n: int = 5) -> str:
        """The first ``n`` examples, one line each, marked right (✓) or wrong (✗)."""
        rows = [
            f"{'✓' if p == a else '✗'} {q.strip()} {p!r:<12} (answer {a!r})"
            for q, a, p in zip(self.prompts[:n], self.answers, self.predictions)
        ]
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (
            f"EvalResult(accuracy={self.accuracy:.3f}, char_accuracy={self.char_accuracy:.3f}, "
            f"n={len(self.answers)})"
        )


@torch.no_grad()
def evaluate_exact_match(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 128,
    max_new_tokens: int | None = None,
) -> EvalResult:
    """Greedy-decode a continuation of every prompt and compare it with the answer, exactly.

    The prediction is the generated text up to the first newline, with surrounding spaces
    stripped; it is correct when it equals the answer. Prompts of the same token length are
    decoded together in one batch (no padding needed). ``max_new_tokens`` defaults to the
    longest ``" answer\\n"`` in the batch, enough for a right answer and its newline: a longer
    continuation would be wrong anyway. Works with any tokenizer of gptlib; the prompt must fit
    the model's context together with the answer.
    """
    from gptlib.sampling import generate  # here: keeps `import gptlib.data` light

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    device = next(model.parameters()).device
    encoded = [tokenizer.encode(p) for p in prompts]
    newline = tokenizer.encode("\n")
    predictions: list[str] = [""] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    for length, members in sorted(by_length.items()):
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            budget = max_new_tokens or max(len(tokenizer.encode(f" {answers[i]}\n")) for i in rows)
            budget = min(budget, model.config.block_size - length)
            if budget < 1:
                raise ValueError(
                    f"a prompt of {length} tokens leaves no room in block_size "
                    f"{model.config.block_size}"
                )
            idx = torch.tensor([encoded[i] for i in rows], dtype=torch.long, device=device)
            out = generate(model, idx, budget, greedy=True, stop=[newline], pad_token=newline[0])
            for row, i in enumerate(rows):
                text = tokenizer.decode(out[row, length:].tolist())
                predictions[i] = text.split("\n", 1)[0].strip()
    return EvalResult(list(prompts), list(answers), predictions)


def evaluate_zero_shot(
    model: torch.nn.Module,
    tokenizer,
    task: Task,
    n: int = 200,
    seed: int = 0,
    prefix: str = "\n",
    inputs: Sequence[str] | None = None,
    **kwargs,
) -> EvalResult:
    """Zero-shot exact-match accuracy of ``model`` on ``task``: prompt ``"name: x ="``, no examples.

    ``n`` inputs are drawn with ``seed`` from the held-out side of the split (or pass
    ``inputs``). ``prefix`` goes before each prompt; the default newline puts the question at
    the start of a line, where task lines stand in the corpus. Extra keyword arguments go to
    :func:`evaluate_exact_match`.
    """
    if inputs is None:
        inputs = sample_inputs(task, n, random.Random(f"eval/{seed}/{task.name}"), held_out=True)
    prompts = [prefix + task.prompt(x) for x in inputs]
    return evaluate_exact_match(
        model, tokenizer, prompts, [task.solve(x) for x in inputs], **kwargs
    )


@torch.no_grad()
def answer_logprob(model: torch.nn.Module, tokenizer, prompt: str, answer: str) -> float:
    """``log P(answer | prompt)`` under ``model``: the sum of the log-probabilities of its tokens.

    Scoring candidate answers by likelihood, instead of decoding one, is how GPT-2 and GPT-3
    evaluate multiple-choice tasks. ``answer`` is appended as it is (include a leading space
    if the text has one: ``answer_logprob(m, tok, "reverse: abc =", " cba")``).
    """
    p, a = tokenizer.encode(prompt), tokenizer.encode(answer)
    if not a:
        return 0.0
    return float(continuation_logprobs(model, [p], [a])[0])
