"""In-context learning (上下文学习): GPT-3's zero-, one- and few-shot prompts, in miniature.

GPT-3 (Brown et al., 2020) showed that a large enough language model can do a task it was
never fine-tuned on when the prompt holds a few solved examples of it: *few-shot* learning
with no gradient step. This module makes that measurable at toy scale.

**Prompts.** One solved example is one line ``"x=y"``; :func:`build_prompt` writes an
optional task description, ``k`` solved examples and the question (``k = 0`` is zero-shot,
``k = 1`` one-shot, more is few-shot)::

    >>> build_prompt([("kqd", "7"), ("bxa", "2")], "kqd")
    '\\nkqd=7\\nbxa=2\\nkqd='

**Tasks whose labels are drawn afresh for every prompt.** A :class:`TaskFamily` draws a new
concrete :class:`gptlib.tasks.Task` for every prompt: a new random word-to-label map
(:func:`lookup_family`), a new linear function mod 10 (:func:`linear_family`), a new string
position to copy (:func:`pick_family`), new labels for the intents of a phone assistant
(:func:`intent_family`). The same input has a different answer in every prompt, so a model
that memorised answers scores at chance: only the examples in the context can tell the answer.

**Training data.** :func:`episode` writes one prompt's worth of solved examples of one task
as a line stream; :func:`icl_batch_fn` turns streams into ``(x, y)`` batches for
:func:`gptlib.train.train`. Because every line of an episode is also a question answered by
the lines before it, :func:`kshot_accuracy` measures accuracy against ``k`` for all ``k`` at
once, in one forward pass per episode: the prediction at the ``k``-th answer position *is* the
answer to a ``k``-shot prompt (:func:`kshot_accuracy_from_prompts` checks that with explicit
prompts and greedy decoding, through :func:`gptlib.tasks.evaluate_exact_match`).

**Induction heads** (Olsson et al., 2022). On a random token sequence repeated twice, a head
that attends from each token of the repeat to the token *after* that token's previous
occurrence is an induction head: it implements "[A][B] ... [A] -> [B]", the copying that
in-context lookup needs. :func:`induction_scores` measures that for every head.

**The family.** ``python -m gptlib.icl`` trains the mini GPT-3 family (``FAMILY``: pico,
a fifth size for the scaling fit, then ada, babbage, curie, davinci) on episodes mixed with
repeated strings (:func:`repeat_text`) and writes them to ``assets/gpt3_family/<size>/``;
``python -m gptlib.icl --induction-run`` trains the longer copy-friendly run
(``INDUCTION_RUN``) into ``assets/gpt3_family/induction_run/``.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gptlib.tasks import Task

__all__ = [
    "SEP", "NONE_LABEL", "build_prompt", "TaskFamily", "lookup_family", "linear_family",
    "pick_family", "reverse_lookup_family", "intent_family", "INTENTS", "SEED_INTENTS",
    "OUT_OF_SCOPE", "FAMILIES", "SEEN", "HELD_OUT", "MIXTURE", "REPEAT_SHARE", "icl_tokenizer",
    "episode", "repeat_text", "icl_batch_fn", "KShotResult", "answer_positions", "kshot_accuracy",
    "kshot_accuracy_from_prompts", "intent_prompt", "evaluate_intents", "repeated_tokens",
    "induction_score_from_attention", "induction_scores", "lookup_copy_scores", "repeat_loss_by_copy",
    "SizeSpec", "FAMILY", "NAMED", "BLOCK_SIZE", "GPT3_FAMILY", "INDUCTION_RUN", "train_config",
    "train_member", "train_family", "load_family", "fit_power_law", "main",
]

#: One solved example is ``f"{x}{SEP}{y}"``, one per line.
SEP = "="
#: The intent task's answer when the question's intent is none of the ones shown ("none of these").
NONE_LABEL = "N"
DIGITS = string.digits
LETTERS = string.ascii_lowercase


# --------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------


def build_prompt(examples: Sequence[tuple[str, str]], query: str, description: str = "") -> str:
    """A zero-, one- or few-shot prompt: description, ``k`` solved examples, the question.

    ``examples`` are ``(input, answer)`` pairs (``[]`` for zero-shot). Every line starts after
    a newline, as in the training episodes, and the prompt ends with ``"query="``: the model's
    continuation should be the answer and a newline.
    """
    for x, y in examples:
        if "\n" in x + y or SEP in x:
            raise ValueError(f"example {(x, y)!r} contains a newline or {SEP!r}: one example is one line "
                             f"'input{SEP}answer'; remove them from the input")
    if "\n" in query or SEP in query:
        raise ValueError(f"query {query!r} contains a newline or {SEP!r}; pass the input alone")
    head = f"\n{description}" if description else ""
    lines = "".join(f"\n{x}{SEP}{y}" for x, y in examples)
    return f"{head}{lines}\n{query}{SEP}"


# --------------------------------------------------------------------------------------
# Task families: a new mapping for every prompt
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFamily:
    """A kind of task whose concrete mapping is drawn afresh for every prompt.

    ``draw(rng)`` returns a :class:`gptlib.tasks.Task` (its ``solve`` holds this prompt's
    mapping, its ``make_input`` draws this prompt's inputs). ``labels`` are all the answers
    the family can give (for chance levels); ``chance`` is the accuracy of a guess that
    knows the label set but not the mapping.
    """

    name: str
    draw: Callable[[random.Random], Task] = field(compare=False)
    labels: str = DIGITS
    chance: float = 0.1

    def __repr__(self) -> str:
        return f"TaskFamily({self.name!r})"


def _words(rng: random.Random, n: int, alphabet: str, length: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(alphabet) for _ in range(length)))
    return sorted(out)


def lookup_family(n_words: int = 5, word_len: int = 2) -> TaskFamily:
    """Random words mapped to random digits, a new map per prompt: ``kq=7``.

    Each prompt draws ``n_words`` letter strings and gives each a distinct digit; inputs are
    drawn from those words. A word's answer can only be read off an earlier line with the
    same word: the pure form of in-context lookup.
    """
    def draw(rng: random.Random) -> Task:
        words = _words(rng, n_words, LETTERS, word_len)
        mapping = dict(zip(words, rng.sample(DIGITS, n_words)))
        return Task("lookup", mapping.__getitem__, lambda r: r.choice(words))
    return TaskFamily("lookup", draw, DIGITS, 1 / len(DIGITS))


def reverse_lookup_family(n_words: int = 5, word_len: int = 2) -> TaskFamily:
    """The lookup task with the alphabets swapped: numbers mapped to letters, ``47=k``.

    Never in the training mixture: a held-out task *type* (same mechanism, new surface).
    """
    def draw(rng: random.Random) -> Task:
        words = _words(rng, n_words, DIGITS, word_len)
        mapping = dict(zip(words, rng.sample(LETTERS, n_words)))
        return Task("reverse lookup", mapping.__getitem__, lambda r: r.choice(words))
    return TaskFamily("reverse lookup", draw, LETTERS, 1 / len(LETTERS))


def linear_family(modulus: int = 10) -> TaskFamily:
    """``y = (a*x + b) mod 10`` on digits, with ``a`` (coprime to 10) and ``b`` new per prompt: ``3=0``."""
    if modulus > 10:
        raise ValueError(f"linear_family writes one digit per number: modulus must be <= 10, got {modulus}")
    units = [a for a in range(1, modulus) if math.gcd(a, modulus) == 1]

    def draw(rng: random.Random) -> Task:
        a, b = rng.choice(units), rng.randrange(modulus)
        return Task(f"linear {a}x+{b}", lambda x: str((a * int(x) + b) % modulus),
                    lambda r: str(r.randrange(modulus)))
    return TaskFamily("linear", draw, DIGITS[:modulus], 1 / modulus)


def pick_family(length: int = 4) -> TaskFamily:
    """Copy the letter at one position of a random string, the position new per prompt: ``wbqe=q``."""
    def draw(rng: random.Random) -> Task:
        i = rng.randrange(length)
        return Task(f"pick {i}", lambda x: x[i],
                    lambda r: "".join(r.sample(LETTERS, length)))
    return TaskFamily("pick", draw, LETTERS, 1 / length)


# --- the phone assistant's intents (the example of the seed article) -----------------

_SLOTS = {
    "城": ["北京", "上海", "广州", "深圳", "成都", "杭州", "西安", "武汉"],
    "日": ["今天", "明天", "后天", "周一", "周五", "下周二"],
    "人": ["张三", "李四", "王五", "妈妈", "老板", "小李", "刘老师"],
    "事": ["我晚点到", "明天开会", "记得带伞", "我到家了"],
    "时": ["上午九点", "下午三点", "晚上八点", "十点"],
    "歌": ["青花瓷", "稻香", "七里香", "小幸运"],
}
#: Intent -> templated requests ({城} city, {日} day, {人} person, {事} message, {时} time, {歌} song).
INTENTS: dict[str, list[str]] = {
    "订机票": ["订一张去{城}的机票", "帮我买{日}去{城}的机票", "我要坐飞机去{城}", "查{日}飞{城}的航班"],
    "通讯录": ["把{人}加到通讯录", "打开通讯录找{人}", "保存{人}的号码", "删除联系人{人}"],
    "打电话": ["给{人}打电话", "呼叫{人}", "拨{人}的手机", "打给{人}"],
    "发短信": ["给{人}发短信", "发短信告诉{人}{事}", "短信{人}说{事}", "给{人}发消息说{事}"],
    "预约会议室": ["预约{日}的会议室", "帮我订{日}{时}的会议室", "{日}{时}要一间会议室", "订个会议室{时}开会"],
    "查天气": ["{城}{日}天气怎么样", "{日}{城}会下雨吗", "查一下{城}的天气"],
    "放音乐": ["放一首{歌}", "我想听{歌}", "播放{歌}"],
    "设闹钟": ["{日}{时}叫我起床", "定一个{时}的闹钟", "设闹钟{时}"],
}
#: The four skills of the seed example, and the request that is none of them.
SEED_INTENTS = ["订机票", "通讯录", "打电话", "发短信"]
OUT_OF_SCOPE = "预约会议室"
_INTENT_LABELS = "ABCDEFGH"


def _utterance(rng: random.Random, intent: str) -> str:
    text = rng.choice(INTENTS[intent])
    for slot, values in _SLOTS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", rng.choice(values), 1)
    return text


def intent_family(n_in_scope: int = 4, oos_rate: float = 0.2, in_scope: Sequence[str] | None = None,
                  out_of_scope: Sequence[str] | None = None) -> TaskFamily:
    """Classify a request to a phone assistant; labels are letters re-drawn for every prompt.

    Each prompt picks ``n_in_scope`` intents (or uses ``in_scope``) and gives each a random
    letter from A-H; a request of any other intent (drawn with probability ``oos_rate``) is
    answered ``N``, "none of these". Inputs are templated Chinese requests, e.g.
    ``给妈妈打电话=C``. Which letter means "call" is only in the context; that a request
    belongs to no intent shown must be inferred from the context too.
    """
    def draw(rng: random.Random) -> Task:
        scope = list(in_scope) if in_scope is not None else rng.sample(sorted(INTENTS), n_in_scope)
        others = list(out_of_scope) if out_of_scope is not None else [i for i in INTENTS if i not in scope]
        labels = dict(zip(scope, rng.sample(_INTENT_LABELS, len(scope))))
        owner: dict[str, str] = {}

        def make_input(r: random.Random) -> str:
            intent = r.choice(others) if (others and r.random() < oos_rate) else r.choice(scope)
            text = _utterance(r, intent)
            owner[text] = intent
            return text

        def solve(text: str) -> str:
            intent = owner.get(text) or _intent_of(text)
            return labels.get(intent, NONE_LABEL)

        task = Task("intent", solve, make_input)
        object.__setattr__(task, "labels", labels)  # for display: which letter means what
        return task
    return TaskFamily("intent", draw, _INTENT_LABELS + NONE_LABEL, 1 / (n_in_scope + 1))


def _intent_of(text: str) -> str:
    """The intent whose templates can produce ``text`` (for requests not made by make_input)."""
    import re

    for intent, templates in INTENTS.items():
        for t in templates:
            pattern = re.escape(t)
            for slot, values in _SLOTS.items():
                pattern = pattern.replace(re.escape("{" + slot + "}"), "(" + "|".join(values) + ")")
            if re.fullmatch(pattern, text):
                return intent
    raise ValueError(f"{text!r} is not a request of any intent in INTENTS: write it from one of their templates")


#: The training mixture (seen task types) and the held-out task type.
FAMILIES: dict[str, TaskFamily] = {f.name: f for f in (lookup_family(), linear_family(), pick_family(),
                                                        intent_family(), reverse_lookup_family())}
SEEN = ["lookup", "linear", "pick", "intent"]
HELD_OUT = ["reverse lookup"]
MIXTURE = {"lookup": 0.35, "linear": 0.1, "pick": 0.1, "intent": 0.2}
#: Share of training rows that are a random letter string repeated line after line (see :func:`repeat_text`).
REPEAT_SHARE = 0.25


def repeat_text(rng: random.Random, n_chars: int, min_len: int = 6, max_len: int = 16) -> str:
    """A random letter string written again and again, one copy per line, ``n_chars`` long.

    After the first copy every character is predictable from the context alone: the
    cleanest training signal for the copying circuit (induction heads) that in-context
    lookup needs. No answer, no task: just text that repeats, as real text often does.
    """
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len)))
    text = "\n"
    while len(text) < n_chars:
        text += word + "\n"
    return text[:n_chars]


def icl_tokenizer():
    """The character tokenizer of every model in this chapter (ASCII used by the tasks + the intents' Chinese)."""
    from gptlib.tokenizer import CharTokenizer

    chars = set(string.ascii_letters + string.digits + SEP + "\n :+")
    for templates in INTENTS.values():
        chars.update("".join(templates))
    for values in _SLOTS.values():
        chars.update("".join(values))
    chars.update("".join(INTENTS))
    chars -= set("{}")
    return CharTokenizer(sorted(chars))


# --------------------------------------------------------------------------------------
# Episodes and batches
# --------------------------------------------------------------------------------------


def episode(family: TaskFamily, rng: random.Random, n_chars: int | None = None, n_examples: int | None = None,
            task: Task | None = None) -> tuple[str, list[tuple[str, str]]]:
    """One prompt's worth of solved examples of one freshly drawn task, as text.

    Returns ``(text, examples)``: ``text = build_prompt(examples[:-1], x_last) + y_last`` plus a
    newline, i.e. ``"\\nx1=y1\\nx2=y2...\\n"``. Stops after ``n_examples`` examples or once the text
    has at least ``n_chars`` characters.
    """
    if (n_chars is None) == (n_examples is None):
        raise ValueError("episode() needs exactly one of n_chars or n_examples")
    task = task or family.draw(rng)
    examples: list[tuple[str, str]] = []
    length = 1
    while (n_examples is not None and len(examples) < n_examples) or (n_chars is not None and length < n_chars):
        x = task.make_input(rng)
        examples.append((x, task.solve(x)))
        length += len(x) + len(SEP) + len(examples[-1][1]) + 1
    text = "\n" + "".join(f"{x}{SEP}{y}\n" for x, y in examples)
    return text, examples


def icl_batch_fn(tokenizer, batch_size: int, block_size: int, mixture: dict[str, float] | None = None,
                 repeat_share: float = REPEAT_SHARE):
    """``batch_fn(generator) -> (x, y)`` for :func:`gptlib.train.train`: one episode per row.

    A share ``repeat_share`` of the rows is :func:`repeat_text`; every other row is the first
    ``block_size + 1`` tokens of an episode of a task family drawn from ``mixture`` (name ->
    weight, default :data:`MIXTURE`); ``y`` is ``x`` shifted by one.
    All randomness comes from ``generator``, so runs are reproducible.
    """
    mixture = dict(MIXTURE if mixture is None else mixture)
    unknown = [n for n in mixture if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; choose from {sorted(FAMILIES)}")
    names, weights = list(mixture), list(mixture.values())

    def batch_fn(generator: torch.Generator):
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        rows = []
        for _ in range(batch_size):
            if rng.random() < repeat_share:
                rows.append(tokenizer.encode(repeat_text(rng, block_size + 1)))
                continue
            family = FAMILIES[rng.choices(names, weights)[0]]
            text, _ = episode(family, rng, n_chars=block_size + 1)
            rows.append(tokenizer.encode(text)[:block_size + 1])
        ids = torch.tensor(rows, dtype=torch.long)
        return ids[:, :-1], ids[:, 1:]
    return batch_fn


# --------------------------------------------------------------------------------------
# k-shot evaluation
# --------------------------------------------------------------------------------------


@dataclass
class KShotResult:
    """Accuracy of answering example ``k`` given the ``k`` before it, for each ``k``."""

    family: str
    shots: list[int]
    accuracy: list[float]
    n: int
    chance: float
    nll: list[float] = field(default_factory=list)  # mean -log P(right answer), nats, per k

    def at(self, k: int) -> float:
        return self.accuracy[self.shots.index(k)]

    def nll_at(self, k: int) -> float:
        return self.nll[self.shots.index(k)]

    def __repr__(self) -> str:
        pairs = ", ".join(f"{k}:{a:.2f}" for k, a in zip(self.shots, self.accuracy))
        return f"KShotResult({self.family!r}, n={self.n}, chance={self.chance:.2f}, accuracy by shots {{{pairs}}})"


def answer_positions(tokenizer, examples: Sequence[tuple[str, str]]) -> list[int]:
    """Token positions in ``tokenizer.encode(episode_text)`` whose logits predict each answer's first token."""
    pos, out = 1, []  # after the leading newline
    for x, y in examples:
        pos += len(tokenizer.encode(x + SEP))
        out.append(pos - 1)
        pos += len(tokenizer.encode(y + "\n"))
    return out


@torch.no_grad()
def kshot_accuracy(model, tokenizer, family: TaskFamily, shots: Sequence[int], n: int = 200, seed: int = 0,
                   batch_size: int = 64) -> KShotResult:
    """Accuracy against the number of in-context examples, ``n`` fresh prompts per ``k``.

    For each of ``n`` episodes (a new mapping each) with ``max(shots) + 1`` examples, one
    forward pass gives, at every answer position, the model's greedy first answer token; the
    ``k``-th answer is a ``k``-shot question. Correct means the argmax over the whole
    vocabulary is the answer (all answers here are one token); ``nll`` also records the mean
    ``-log P(answer)``, a softer score that moves before accuracy does. Raises if the
    episodes do not fit the model's context.
    """
    shots = sorted(set(int(k) for k in shots))
    if shots[0] < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    rng = random.Random(f"kshot/{seed}/{family.name}")
    device = next(model.parameters()).device
    block = model.config.block_size
    correct = torch.zeros(len(shots))
    nll = torch.zeros(len(shots))
    texts, targets, positions = [], [], []
    for _ in range(n):
        text, examples = episode(family, rng, n_examples=shots[-1] + 1)
        ids = tokenizer.encode(text)[:-1]
        if len(ids) > block:
            raise ValueError(f"a {shots[-1]}-shot {family.name} prompt has {len(ids)} tokens, more than the "
                             f"model's block_size {block}: ask for fewer shots")
        pos = answer_positions(tokenizer, examples)
        texts.append(ids)
        positions.append([pos[k] for k in shots])
        targets.append([tokenizer.encode(examples[k][1])[0] for k in shots])
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            chunk = texts[start:start + batch_size]
            width = max(len(t) for t in chunk)
            idx = torch.tensor([t + [t[-1]] * (width - len(t)) for t in chunk], device=device)  # right pad: causal
            logits = model(idx).float().cpu()
            pos = torch.tensor(positions[start:start + batch_size])
            tgt = torch.tensor(targets[start:start + batch_size])
            at = logits[torch.arange(len(chunk))[:, None], pos]  # (b, len(shots), V)
            correct += (at.argmax(-1) == tgt).float().sum(0)
            nll -= torch.log_softmax(at, -1).gather(-1, tgt[..., None])[..., 0].sum(0)
    finally:
        model.train(was_training)
    return KShotResult(family.name, shots, (correct / n).tolist(), n, family.chance, (nll / n).tolist())


def kshot_accuracy_from_prompts(model, tokenizer, family: TaskFamily, k: int, n: int = 100, seed: int = 0,
                                description: str = ""):
    """The same measurement the GPT-3 way: build ``n`` explicit ``k``-shot prompts, greedy-decode.

    Uses :func:`build_prompt` and :func:`gptlib.tasks.evaluate_exact_match`; with the default
    empty description it must agree with :func:`kshot_accuracy` at ``k`` (same episodes).
    Returns the :class:`gptlib.tasks.EvalResult`.
    """
    from gptlib.tasks import evaluate_exact_match

    rng = random.Random(f"kshot/{seed}/{family.name}")
    prompts, answers = [], []
    for _ in range(n):
        # draw exactly what kshot_accuracy draws for its longest shot count = k
        _, examples = episode(family, rng, n_examples=k + 1)
        prompts.append(build_prompt(examples[:k], examples[k][0], description))
        answers.append(examples[k][1])
    return evaluate_exact_match(model, tokenizer, prompts, answers)


def intent_prompt(rng: random.Random, shots_per_intent: int, query_intent: str,
                  in_scope: Sequence[str] = SEED_INTENTS) -> tuple[str, str, dict[str, str]]:
    """A few-shot prompt for the assistant: ``shots_per_intent`` requests of each in-scope intent
    (shuffled, letters drawn afresh), then a request of ``query_intent``.

    Returns ``(prompt, answer, labels)``; the answer is ``"N"`` when ``query_intent`` is not in scope.
    """
    if query_intent not in INTENTS:
        raise ValueError(f"unknown intent {query_intent!r}; choose from {list(INTENTS)}")
    labels = dict(zip(in_scope, rng.sample(_INTENT_LABELS, len(in_scope))))
    demos = [(_utterance(rng, i), labels[i]) for i in in_scope for _ in range(shots_per_intent)]
    rng.shuffle(demos)
    return build_prompt(demos, _utterance(rng, query_intent)), labels.get(query_intent, NONE_LABEL), labels


@torch.no_grad()
def evaluate_intents(model, tokenizer, shots_per_intent: Sequence[int], n: int = 100, seed: int = 0,
                     in_scope: Sequence[str] = SEED_INTENTS, out_of_scope: str = OUT_OF_SCOPE) -> dict:
    """In-scope accuracy and out-of-scope detection against shots per intent.

    For each ``k``: ``n`` prompts whose question is in scope (accuracy = the right letter) and
    ``n`` whose question is ``out_of_scope`` (detection = the answer ``N``). The prediction is
    the most likely next token after the prompt. Returns ``{k: {"in_scope": acc, "oos": acc,
    "false_none": share of in-scope questions answered N}}``.
    """
    device = next(model.parameters()).device
    out = {}
    was_training = model.training
    model.eval()
    try:
        for k in shots_per_intent:
            rng = random.Random(f"intent/{seed}/{k}")
            scores = {"in_scope": 0.0, "oos": 0.0, "false_none": 0.0}
            for kind in ("in_scope", "oos"):
                for _ in range(n):
                    q = rng.choice(list(in_scope)) if kind == "in_scope" else out_of_scope
                    prompt, answer, _ = intent_prompt(rng, k, q, in_scope)
                    ids = tokenizer.encode(prompt)[-model.config.block_size:]
                    logits = model(torch.tensor([ids], device=device), last_only=True)[0, -1]
                    pred = tokenizer.decode([int(logits.argmax())])
                    scores[kind] += (pred == answer) / n
                    if kind == "in_scope":
                        scores["false_none"] += (pred == NONE_LABEL) / n
            out[k] = scores
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------
# Induction heads
# --------------------------------------------------------------------------------------


def repeated_tokens(n_seq: int, length: int, token_ids: Sequence[int], seed: int = 0) -> torch.Tensor:
    """``n_seq`` sequences of ``length`` random tokens (from ``token_ids``) followed by the same tokens
    again: shape ``(n_seq, 2 * length)``. Tokens within one half are distinct when possible, so
    "the previous occurrence" of a token in the second half is unique."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(list(token_ids))
    rows = []
    for _ in range(n_seq):
        if length <= len(pool):
            half = pool[torch.randperm(len(pool), generator=g)[:length]]
        else:
            half = pool[torch.randint(len(pool), (length,), generator=g)]
        rows.append(torch.cat([half, half]))
    return torch.stack(rows)


def induction_score_from_attention(att: torch.Tensor, length: int) -> torch.Tensor:
    """Induction score of attention maps on a sequence repeated once (two halves of ``length``).

    ``att`` has shape ``(..., T, T)`` with ``T = 2 * length`` (rows: queries, columns: keys).
    For every query ``t`` in the second half, the previous occurrence of its token is at
    ``t - length`` and the token after that one at ``t - length + 1`` (always at or before
    ``t``). The score is the mean attention weight on that position over the ``length``
    queries of the second half. Returns shape ``att.shape[:-2]``: 1 for a perfect induction
    head, about ``1 / t`` averaged over the queries for uniform attention.
    """
    T = att.shape[-1]
    if att.shape[-2] != T or T != 2 * length:
        raise ValueError(f"attention of shape {tuple(att.shape)} does not fit two halves of length {length}: "
                         f"the last two dimensions must both be {2 * length}")
    q = torch.arange(length, T)
    return att[..., q, q - length + 1].mean(-1)


@torch.no_grad()
def induction_scores(model, token_ids: Sequence[int], length: int | None = None, n_seq: int = 16,
                     seed: int = 0) -> torch.Tensor:
    """Induction score of every head, shape ``(n_layer, n_head)``, on repeated random tokens.

    ``length`` defaults to half the context, at most 40 and at most the number of distinct
    tokens (so that every token occurs once in each half). Averaged over ``n_seq`` sequences.
    """
    length = length or min(len(token_ids), 40, model.config.block_size // 2)
    device = next(model.parameters()).device
    idx = repeated_tokens(n_seq, length, token_ids, seed).to(device)
    was_training = model.training
    model.eval()
    try:
        maps = model.attention_weights(idx)  # list of (B, H, T, T)
    finally:
        model.train(was_training)
    return torch.stack([induction_score_from_attention(a.float(), length).mean(0) for a in maps]).cpu()


@torch.no_grad()
def lookup_copy_scores(model, tokenizer, n: int = 32, seed: int = 0) -> torch.Tensor:
    """Induction in the task's own format: attention from ``=`` to the earlier answer, per head.

    In ``lookup`` episodes, for every line whose word appeared before, take the attention
    from its ``=`` (the position that predicts the answer) to the answer token of the word's
    previous occurrence (the token after the previous ``word=``), minus its mean attention to
    the latest answers of the *other* words. A head that attends to answers indiscriminately
    scores 0, one that copies the right answer close to 1. Returns ``(n_layer, n_head)``,
    averaged over all such lines of ``n`` episodes that fit the context.
    """
    rng = random.Random(f"copy/{seed}")
    device = next(model.parameters()).device
    block = model.config.block_size
    total, count = None, 0
    for _ in range(n):
        text, examples = episode(FAMILIES["lookup"], rng, n_chars=block)
        ids = tokenizer.encode(text)[:block]
        pos = answer_positions(tokenizer, examples)
        last: dict[str, int] = {}
        triples = []  # (query "=", the right earlier answer, the other earlier answers)
        for (x, _), p in zip(examples, pos):
            if p + 1 >= len(ids):
                break
            others = [q + 1 for w, q in last.items() if w != x]
            if x in last and others:
                triples.append((p, last[x] + 1, others))
            last[x] = p
        if not triples:
            continue
        maps = model.attention_weights(torch.tensor([ids], device=device))
        att = torch.stack([m[0] for m in maps]).float().cpu()  # (L, H, T, T)
        for q, right, others in triples:
            s = att[:, :, q, right] - att[:, :, q, others].mean(-1)
            total = s if total is None else total + s
        count += len(triples)
    if total is None:
        raise ValueError("no lookup line repeated a word within the context: use a model with a longer block_size")
    return total / count


@torch.no_grad()
def repeat_loss_by_copy(model, tokenizer, word_len: int = 10, n: int = 32, seed: int = 0) -> list[float]:
    """Mean loss (nats/char) on each copy of a random ``word_len``-letter string repeated to fill the context.

    The first copy is unpredictable (about ln 26 = 3.26 nats per letter); a model that copies
    from its context gets the later copies almost free. The drop from copy 1 to copy 2 is the
    simplest measure of in-context learning: Olsson et al.'s "in-context learning score"
    compares the loss late in the context with the loss early on.
    """
    rng = random.Random(f"repeat/{seed}")
    block = model.config.block_size
    device = next(model.parameters()).device
    rows = [tokenizer.encode(repeat_text(rng, block + 1, word_len, word_len)) for _ in range(n)]
    ids = torch.tensor(rows, device=device)
    was_training = model.training
    model.eval()
    try:
        logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)
    finally:
        model.train(was_training)
    loss = -logp.gather(-1, ids[:, 1:, None])[..., 0].mean(0).cpu()  # per predicted position
    # predicted position j is character j + 1 of the text "\n" + (word + "\n") * copies
    out = []
    for c in range(block // (word_len + 1)):
        start = c * (word_len + 1)  # predicting the first letter of copy c+1 ... its newline
        out.append(float(loss[start:start + word_len + 1].mean()))
    return out


# --------------------------------------------------------------------------------------
# The family: ada, babbage, curie, davinci (and two extra sizes for the scaling fit)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeSpec:
    n_layer: int
    n_head: int
    n_embd: int
    lr: float


#: The mini family, named after GPT-3's API models; "pico", smaller still, adds a fifth size to the scaling fit.
FAMILY: dict[str, SizeSpec] = {
    "pico": SizeSpec(1, 1, 16, 3e-3),
    "ada": SizeSpec(1, 2, 24, 3e-3),
    "babbage": SizeSpec(2, 2, 32, 3e-3),
    "curie": SizeSpec(3, 4, 48, 3e-3),
    "davinci": SizeSpec(4, 4, 64, 3e-3),
}
NAMED = ["ada", "babbage", "curie", "davinci"]

#: GPT-3's eight sizes (Brown et al., 2020, Table 2.1): name, parameters, layers, d_model, heads.
GPT3_FAMILY = [
    ("GPT-3 Small", 125e6, 12, 768, 12), ("GPT-3 Medium", 350e6, 24, 1024, 16),
    ("GPT-3 Large", 760e6, 24, 1536, 16), ("GPT-3 XL", 1.3e9, 24, 2048, 24),
    ("GPT-3 2.7B", 2.7e9, 32, 2560, 32), ("GPT-3 6.7B", 6.7e9, 32, 4096, 32),
    ("GPT-3 13B", 13e9, 40, 5140, 40), ("GPT-3 175B", 175e9, 96, 12288, 96),
]

BLOCK_SIZE = 128


def train_config(size: str, max_iters: int = 2000, **overrides):
    """The :class:`gptlib.train.TrainConfig` of one member (same data and steps for all)."""
    from gptlib.train import TrainConfig

    spec = FAMILY[size]
    base = dict(max_iters=max_iters, batch_size=16, block_size=BLOCK_SIZE, lr=spec.lr, min_lr=spec.lr / 10,
                warmup_iters=100, eval_interval=max(1, max_iters // 20), eval_iters=4, log_interval=10,
                weight_decay=0.1, progress=False, seed=1337, out_dir=None,
                model=dict(n_layer=spec.n_layer, n_head=spec.n_head, n_embd=spec.n_embd))
    base.update(overrides)
    return TrainConfig(**base)


def _probe(model, tokenizer, entry: dict) -> None:
    """Measurements recorded along training: induction score (best head), k-shot lookup accuracy."""
    letters = tokenizer.encode(LETTERS)
    entry["induction"] = float(induction_scores(model, letters, n_seq=8).max())
    shots = [0, 2, 8] + ([16] if model.config.block_size >= 128 else [])
    acc = kshot_accuracy(model, tokenizer, FAMILIES["lookup"], shots, n=48, seed=99)
    for k in shots[1:]:
        entry[f"lookup_acc_{k}"] = acc.at(k)
    entry["repeat_drop"] = float(np.subtract(*repeat_loss_by_copy(model, tokenizer, n=8)[:2]))


def train_member(size: str, max_iters: int = 2000, device: str | None = None, probe: bool = True,
                 mixture: dict[str, float] | None = None, repeat_share: float = REPEAT_SHARE, spec=None,
                 **overrides):
    """Train one member from scratch; returns ``(model, TrainResult)``. ``probe`` records the
    induction score, k-shot lookup accuracy and the repeat-text loss drop at every evaluation."""
    from gptlib.model import GPT, GPTConfig
    from gptlib.train import train

    tokenizer = icl_tokenizer()
    cfg = train_config(size, max_iters, device=device, **overrides)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, **cfg.model))
    fn = icl_batch_fn(tokenizer, cfg.batch_size, cfg.block_size, mixture, repeat_share)

    def callback(entry):
        if probe and "val_loss" in entry:
            _probe(model, tokenizer, entry)
            print(f"{size} step {entry['iter']}: val loss {entry['val_loss']:.3f}, induction {entry['induction']:.3f}, "
                  f"8-shot lookup {entry['lookup_acc_8']:.2f}, repeat drop {entry['repeat_drop']:.2f}", flush=True)
    result = train(model, cfg, fn, fn, callback=callback)
    return model.eval(), result


#: A longer run of one small model on copy-friendly data (repeats and lookup only, short
#: context, bigger batches): where to look for the phase change on a CPU budget.
INDUCTION_RUN = dict(size="babbage", max_iters=4000, batch_size=64, block_size=64, eval_interval=125,
                     mixture={"lookup": 1.0}, repeat_share=0.5)


def train_family(out_dir: str | Path | None, sizes: Sequence[str] = tuple(FAMILY), max_iters: int = 2000,
                 device: str | None = None, **overrides) -> dict:
    """Train the members ``sizes`` and (if ``out_dir``) save each to ``out_dir/<size>/``.

    ``overrides`` go to :func:`train_config` (e.g. ``batch_size=64`` for a GPU run)."""
    from gptlib.checkpoint import save_model

    tokenizer = icl_tokenizer()
    out = {}
    for size in sizes:
        if size not in FAMILY:
            raise ValueError(f"unknown size {size!r}; choose from {list(FAMILY)}")
        model, result = train_member(size, max_iters, device, **overrides)
        meta = dict(size=size, params=model.num_params(), history=result.history,
                    final_val_loss=result.final_val_loss, seconds=result.elapsed_s,
                    train_config=result.config.to_dict(),
                    command=f"python -m gptlib.icl --sizes {size} --max-iters {max_iters}")
        print(f"{size:>8}: {model.num_params():>8,} parameters, val loss {result.final_val_loss:.4f}, "
              f"{result.elapsed_s:.0f} s", flush=True)
        if out_dir is not None:
            folder = Path(out_dir) / size
            folder.mkdir(parents=True, exist_ok=True)
            save_model(folder / "model.safetensors", model.cpu())
            tokenizer.save(folder / "tokenizer.json")
            (folder / "ckpt.json").write_text(json.dumps({"meta": meta}, indent=1))
        out[size] = dict(model=model, history=result.history, val_loss=result.final_val_loss,
                         seconds=result.elapsed_s, params=model.num_params())
    return out


def load_family(folder: str | Path, sizes: Sequence[str] = tuple(FAMILY), device=None) -> dict:
    """Load members saved by :func:`train_family`: ``{size: dict(model, history, val_loss, seconds, params)}``."""
    from gptlib.checkpoint import load_model

    out = {}
    for size in sizes:
        path = Path(folder) / size
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(f"no model in {path}: train it with `python -m gptlib.icl --sizes {size}`")
        meta = json.loads((path / "ckpt.json").read_text())["meta"]
        model = load_model(path / "model.safetensors", device=device)
        out[size] = dict(model=model, history=meta["history"], val_loss=meta["final_val_loss"],
                         seconds=meta["seconds"], params=meta["params"], command=meta["command"])
    return out


def fit_power_law(n: Sequence[float], loss: Sequence[float], with_offset: bool = True) -> dict:
    """Fit ``L(N) = a * N**(-alpha) + c`` (or ``c = 0``) by least squares on log L.

    For a grid of offsets ``c`` below ``min(loss)``, ``log(L - c)`` is linear in ``log N``;
    the best line over the grid wins. Returns ``dict(a, alpha, c, rmse)`` (rmse of log L).
    """
    import numpy as np

    n, loss = np.asarray(n, float), np.asarray(loss, float)
    if len(n) < 3 or len(n) != len(loss):
        raise ValueError(f"need >= 3 (N, loss) pairs of equal length, got {len(n)} and {len(loss)}")
    if (n <= 0).any() or (loss <= 0).any():
        raise ValueError("parameters and losses must be positive for a log-log fit")
    offsets = np.linspace(0, loss.min() * 0.999, 400) if with_offset else np.array([0.0])
    best = None
    x = np.log(n)
    if np.ptp(x) == 0:
        raise ValueError("all models have the same size: a fit against N needs different N")
    for c in offsets:
        y = np.log(loss - c)
        slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
        icpt = float(y.mean() - slope * x.mean())
        pred = np.exp(icpt) * n ** slope + c
        rmse = float(np.sqrt(np.mean((np.log(pred) - np.log(loss)) ** 2)))
        if best is None or rmse < best["rmse"]:
            best = dict(a=float(np.exp(icpt)), alpha=float(-slope), c=float(c), rmse=rmse)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m gptlib.icl [--sizes ada,babbage] [--max-iters 2000] [--out assets/gpt3_family]``."""
    from gptlib.paths import ASSETS

    p = argparse.ArgumentParser(description="Train the mini GPT-3 family on in-context-learning episodes.")
    p.add_argument("--sizes", default=",".join(FAMILY), help=f"comma-separated, from {list(FAMILY)}")
    p.add_argument("--max-iters", type=int, default=2000)
    p.add_argument("--out", default=str(ASSETS / "gpt3_family"))
    p.add_argument("--device", default=None)
    p.add_argument("--induction-run", action="store_true",
                   help="instead: the longer copy-friendly run of INDUCTION_RUN, saved to OUT/induction_run")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.induction_run:
        from gptlib.checkpoint import save_model

        run = dict(INDUCTION_RUN)
        if args.max_iters != p.get_default("max_iters"):
            run["max_iters"] = args.max_iters
        size, iters = run.pop("size"), run.pop("max_iters")
        model, result = train_member(size, iters, args.device, **run)
        folder = Path(args.out) / "induction_run"
        folder.mkdir(parents=True, exist_ok=True)
        save_model(folder / "model.safetensors", model.cpu())
        icl_tokenizer().save(folder / "tokenizer.json")
        meta = dict(size=size, params=model.num_params(), history=result.history, final_val_loss=result.final_val_loss,
                    seconds=result.elapsed_s, train_config=result.config.to_dict(),
                    command=f"python -m gptlib.icl --induction-run --max-iters {iters}")
        (folder / "ckpt.json").write_text(json.dumps({"meta": meta}, indent=1))
    else:
        train_family(args.out, [s for s in args.sizes.split(",") if s], args.max_iters, args.device)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
