"""In-context learning (上下文学习): GPT-3's zero-, one- and few-shot prompts, in miniature.

GPT-3 (Brown et al., 2020) showed that a large enough language model can do a task it was
never fine-tuned on when the prompt holds a few solved examples of it: *few-shot* learning
with no gradient step. This module makes that measurable at toy scale.

**Prompts.** One solved example is one line ``"x=y"``; :func:`build_prompt` writes an
optional task description, ``k`` solved examples and the question (``k = 0`` is zero-shot)::

    >>> build_prompt([("k", "7"), ("b", "2")], "k")
    '\\nk=7\\nb=2\\nk='

**Tasks whose labels are drawn afresh for every prompt.** A :class:`TaskFamily` draws a new
concrete :class:`gptlib.tasks.Task` for every prompt: a new letter-to-digit map
(:func:`lookup_family`; :func:`pairs_family` writes it as bare pairs ``k7b2``, the label right
after its key), a new linear function mod 10, a new position to copy, new letters for the
intents of a phone assistant (:func:`intent_family`, :func:`intent_names_family`). The same
input has a different answer in every prompt: only the examples in the context can tell it.

**Training and measuring.** :func:`episode` writes one prompt's worth of solved examples as
text; :func:`icl_batch_fn` turns episodes into ``(x, y)`` batches. Every example of an episode
is a question answered by those before it, so :func:`kshot_accuracy` measures accuracy
against ``k`` for all ``k`` in one forward pass per episode (:func:`kshot_accuracy_from_prompts`
checks that with explicit prompts and greedy decoding).

Elsewhere: the intents in context in :mod:`gptlib.intents`; few-shot prompting versus
fine-tuning in :mod:`gptlib.fewshot`; the recipe ``gptlib/recipes/icl.py`` (assets
``icl/kshot``, ``icl/sweep``); induction heads in :mod:`gptlib.induction`.
"""

from __future__ import annotations

import math
import random
import re
import string
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from gptlib.evaluate import eval_mode
from gptlib.induction import recurring_batch
from gptlib.tasks import Task

__all__ = [
    "SEP",
    "NONE_LABEL",
    "build_prompt",
    "TaskFamily",
    "lookup_family",
    "linear_family",
    "pick_family",
    "reverse_lookup_family",
    "pairs_family",
    "intent_family",
    "intent_names_family",
    "INTENTS",
    "SEED_INTENTS",
    "OUT_OF_SCOPE",
    "FAMILIES",
    "SEEN",
    "HELD_OUT",
    "MIXTURE",
    "LINE_CHARS",
    "shots_that_fit",
    "icl_tokenizer",
    "episode",
    "icl_batch_fn",
    "KShotResult",
    "answer_positions",
    "kshot_accuracy",
    "kshot_accuracy_from_prompts",
]

#: One solved example is ``f"{x}{SEP}{y}"``, one per line.
SEP = "="
#: The intent task's answer when the question's intent is none of the ones shown ("none of these").
NONE_LABEL = "N"
DIGITS = string.digits
LETTERS = string.ascii_lowercase


# --- Prompts -------------------------------------------------------------------------


def build_prompt(
    examples: Sequence[tuple[str, str]],
    query: str,
    description: str = "",
    sep: str = SEP,
    end: str = "\n",
) -> str:
    """A zero-, one- or few-shot prompt: description, ``k`` solved examples, the question.

    ``examples`` are ``(input, answer)`` pairs (``[]`` for zero-shot). Every line starts after
    a newline, as in the training episodes, and the prompt ends with ``"query="``: the model's
    continuation should be the answer and a newline. ``sep`` and ``end`` change the format:
    ``sep="", end=""`` writes the examples as bare pairs, ``"k7b2k"`` (:func:`pairs_family`).
    """
    for x, y in examples:
        if "\n" in x + y or (sep and sep in x):
            raise ValueError(
                f"example {(x, y)!r} contains a newline or {sep!r}: one example is one line "
                f"'input{sep}answer'; remove them from the input"
            )
    if "\n" in query or (sep and sep in query):
        raise ValueError(f"query {query!r} contains a newline or {sep!r}; pass the input alone")
    head = f"{end}{description}" if description else ""
    lines = "".join(f"{end}{x}{sep}{y}" for x, y in examples)
    return f"{head}{lines}{end}{query}{sep}"


# --- Task families: a new mapping for every prompt -----------------------------------


@dataclass(frozen=True)
class TaskFamily:
    """A kind of task whose concrete mapping is drawn afresh for every prompt.

    ``draw(rng)`` returns a :class:`gptlib.tasks.Task` (its ``solve`` holds this prompt's
    mapping, its ``make_input`` draws this prompt's inputs). ``labels`` are all the answers
    the family can give (for chance levels); ``chance`` is the accuracy of a guess that
    knows the label set but not the mapping. ``sep`` and ``end`` are the format of one
    example, ``f"{x}{sep}{y}{end}"``: ``"k=7\\n"`` by default, ``"k7"`` for bare pairs.
    """

    name: str
    draw: Callable[[random.Random], Task] = field(compare=False)
    labels: str = DIGITS
    chance: float = 0.1
    sep: str = SEP
    end: str = "\n"

    def prompt(self, examples: Sequence[tuple[str, str]], query: str, description: str = ""):
        """:func:`build_prompt` in this family's format."""
        return build_prompt(examples, query, description, self.sep, self.end)

    def __repr__(self) -> str:
        return f"TaskFamily({self.name!r})"


def _words(rng: random.Random, n: int, alphabet: str, length: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(alphabet) for _ in range(length)))
    return sorted(out)


def lookup_family(n_words: int = 5, word_len: int = 1) -> TaskFamily:
    """Random words mapped to random digits, a new map per prompt: ``k=7``.

    (``kq=7`` with ``word_len=2``.)

    Each prompt draws ``n_words`` letter strings and gives each a distinct digit; inputs are
    drawn from those words. A word's answer can only be read off an earlier line with the
    same word: the pure form of in-context lookup.
    """

    def draw(rng: random.Random) -> Task:
        words = _words(rng, n_words, LETTERS, word_len)
        mapping = dict(zip(words, rng.sample(DIGITS, n_words)))
        return Task("lookup", mapping.__getitem__, lambda r: r.choice(words))

    return TaskFamily("lookup", draw, DIGITS, 1 / len(DIGITS))


def pairs_family(n_words: int = 5) -> TaskFamily:
    """The lookup task written as bare pairs, key then label, no separator: ``k7b2a5k7``.

    One letter mapped to one digit, five letters per prompt (distinct digits: every label is
    as frequent as its key, so counting labels tells nothing about which one a key has). The
    label is predicted right after its key, so reading it off the earlier pair is one
    induction step: match the key, copy the token that followed it (Olsson et al. 2022).
    """
    base = lookup_family(n_words, 1)
    return TaskFamily("pairs", base.draw, DIGITS, 1 / len(DIGITS), sep="", end="")


def reverse_lookup_family(n_words: int = 5, word_len: int = 1) -> TaskFamily:
    """The lookup task with the alphabets swapped: digits mapped to letters, ``4=k``.

    Never in the training mixture: a held-out task *type* (same mechanism, new surface).
    """

    def draw(rng: random.Random) -> Task:
        words = _words(rng, n_words, DIGITS, word_len)
        mapping = dict(zip(words, rng.sample(LETTERS, n_words)))
        return Task("reverse lookup", mapping.__getitem__, lambda r: r.choice(words))

    return TaskFamily("reverse lookup", draw, LETTERS, 1 / len(LETTERS))


def linear_family(modulus: int = 10) -> TaskFamily:
    """``y = (a*x + b) mod 10`` on digits, ``a`` (coprime to 10), ``b`` new per prompt: ``3=0``."""
    if modulus > 10:
        raise ValueError(
            f"linear_family writes one digit per number: modulus must be <= 10, got {modulus}"
        )
    units = [a for a in range(1, modulus) if math.gcd(a, modulus) == 1]

    def draw(rng: random.Random) -> Task:
        a, b = rng.choice(units), rng.randrange(modulus)
        return Task(
            f"linear {a}x+{b}",
            lambda x: str((a * int(x) + b) % modulus),
            lambda r: str(r.randrange(modulus)),
        )

    return TaskFamily("linear", draw, DIGITS[:modulus], 1 / modulus)


def pick_family(length: int = 4) -> TaskFamily:
    """Copy the letter at one position of a random string, position new per prompt: ``wbqe=q``."""

    def draw(rng: random.Random) -> Task:
        i = rng.randrange(length)
        return Task(f"pick {i}", lambda x: x[i], lambda r: "".join(r.sample(LETTERS, length)))

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
#: Intent -> templated requests ({城} city, {日} day, {人} person, {事} message, {时} time,
#: {歌} song).
INTENTS: dict[str, list[str]] = {
    "订机票": [
        "订一张去{城}的机票",
        "帮我买{日}去{城}的机票",
        "我要坐飞机去{城}",
        "查{日}飞{城}的航班",
    ],
    "通讯录": ["把{人}加到通讯录", "打开通讯录找{人}", "保存{人}的号码", "删除联系人{人}"],
    "打电话": ["给{人}打电话", "呼叫{人}", "拨{人}的手机", "打给{人}"],
    "发短信": ["给{人}发短信", "发短信告诉{人}{事}", "短信{人}说{事}", "给{人}发消息说{事}"],
    "预约会议室": [
        "预约{日}的会议室",
        "帮我订{日}{时}的会议室",
        "{日}{时}要一间会议室",
        "订个会议室{时}开会",
    ],
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


def intent_family(
    n_in_scope: int = 4,
    oos_rate: float = 0.2,
    in_scope: Sequence[str] | None = None,
    out_of_scope: Sequence[str] | None = None,
) -> TaskFamily:
    """Classify a request to a phone assistant; labels are letters re-drawn for every prompt.

    Each prompt picks ``n_in_scope`` intents (or uses ``in_scope``) and gives each a random
    letter from A-H; a request of any other intent (drawn with probability ``oos_rate``) is
    answered ``N``, "none of these". Inputs are templated Chinese requests, e.g.
    ``给妈妈打电话=C``. Which letter means "call" is only in the context; that a request
    belongs to no intent shown must be inferred from the context too.
    """

    def draw(rng: random.Random) -> Task:
        scope = list(in_scope) if in_scope is not None else rng.sample(sorted(INTENTS), n_in_scope)
        others = (
            list(out_of_scope)
            if out_of_scope is not None
            else [i for i in INTENTS if i not in scope]
        )
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


def intent_names_family(n_in_scope: int = 4, oos_rate: float = 0.2) -> TaskFamily:
    """The assistant's intents with each request written as its intent's name, in pairs.

    ``打电话C订机票A预约会议室N``: each prompt picks ``n_in_scope`` of the intents and gives
    each a random letter from A-H; the other intents (drawn with probability ``oos_rate``)
    are answered ``N``. A name is a short token sequence whose last character differs from
    every other name's, so the lookup is the pairs task's: match the name, copy what followed
    it; a name never shown is "none of these". No wording to understand: the requests are
    the names themselves (what the chapter says about it).
    """
    names = sorted(INTENTS)

    def draw(rng: random.Random) -> Task:
        scope = rng.sample(names, n_in_scope)
        others = [i for i in names if i not in scope]
        labels = dict(zip(scope, rng.sample(_INTENT_LABELS, n_in_scope)))

        def make_input(r: random.Random) -> str:
            return r.choice(others) if r.random() < oos_rate else r.choice(scope)

        task = Task("intent names", lambda x: labels.get(x, NONE_LABEL), make_input)
        object.__setattr__(task, "labels", labels)
        return task

    return TaskFamily(
        "intent names", draw, _INTENT_LABELS + NONE_LABEL, 1 / (n_in_scope + 1), sep="", end=""
    )


def _intent_of(text: str) -> str:
    """The intent whose templates can produce ``text`` (for requests not made by make_input)."""
    for intent, templates in INTENTS.items():
        for t in templates:
            pattern = re.escape(t)
            for slot, values in _SLOTS.items():
                pattern = pattern.replace(re.escape("{" + slot + "}"), "(" + "|".join(values) + ")")
            if re.fullmatch(pattern, text):
                return intent
    raise ValueError(
        f"{text!r} is not a request of any intent in INTENTS: write it from one of their templates"
    )


#: The training mixture (seen task types) and the held-out task type.
FAMILIES: dict[str, TaskFamily] = {
    f.name: f
    for f in (
        lookup_family(),
        linear_family(),
        pick_family(),
        intent_family(),
        reverse_lookup_family(),
        pairs_family(),
        intent_names_family(),
    )
}
SEEN = ["pairs", "intent names"]
HELD_OUT = ["lookup", "reverse lookup", "linear", "pick", "intent"]
#: What the ``icl/kshot`` model is trained on (share of episodes per family); the recipe adds
#: sequences of recurring random tokens (:func:`icl_batch_fn`'s ``recurring``).
MIXTURE = {"pairs": 0.5, "intent names": 0.5}
#: Longest line of each family in characters (with ``=``, answer and newline): sets how many
#: examples fit in a context.
LINE_CHARS = {
    "lookup": 4,
    "reverse lookup": 4,
    "linear": 4,
    "pick": 7,
    "intent": 18,
    "pairs": 2,
    "intent names": 6,
}


def shots_that_fit(
    family: str, block_size: int, shots: Sequence[int] = (0, 1, 2, 4, 8, 16)
) -> list[int]:
    """The entries of ``shots`` whose prompts (``k`` examples and the question) surely fit
    ``block_size`` tokens, for the family named ``family``."""
    if family not in LINE_CHARS:
        raise ValueError(f"unknown family {family!r}; choose from {sorted(LINE_CHARS)}")
    start = len(FAMILIES[family].end) if family in FAMILIES else 1
    return [k for k in shots if start + (k + 1) * LINE_CHARS[family] <= block_size]


def icl_tokenizer():
    """The character tokenizer of the chapter's models: the tasks' ASCII + the intents' Chinese."""
    from gptlib.tokenizer import CharTokenizer

    chars = set(string.ascii_letters + string.digits + SEP + "\n :+")
    chars.update("".join(t for group in (*INTENTS.values(), *_SLOTS.values()) for t in group))
    chars.update("".join(INTENTS))
    chars -= set("{}")
    return CharTokenizer(sorted(chars))


# --- Episodes and batches ------------------------------------------------------------


def episode(
    family: TaskFamily,
    rng: random.Random,
    n_chars: int | None = None,
    n_examples: int | None = None,
    task: Task | None = None,
) -> tuple[str, list[tuple[str, str]]]:
    """One prompt's worth of solved examples of one freshly drawn task, as text.

    Returns ``(text, examples)``: ``text = build_prompt(examples[:-1], x_last) + y_last`` plus a
    newline, i.e. ``"\\nx1=y1\\nx2=y2...\\n"`` (``"x1y1x2y2..."`` for bare pairs). Stops after
    ``n_examples`` examples or once the text has at least ``n_chars`` characters.
    """
    if (n_chars is None) == (n_examples is None):
        raise ValueError("episode() needs exactly one of n_chars or n_examples")
    task = task or family.draw(rng)
    examples: list[tuple[str, str]] = []
    sep, end = family.sep, family.end
    length = len(end)
    while (n_examples is not None and len(examples) < n_examples) or (
        n_chars is not None and length < n_chars
    ):
        x = task.make_input(rng)
        examples.append((x, task.solve(x)))
        length += len(x) + len(sep) + len(examples[-1][1]) + len(end)
    text = end + "".join(f"{x}{sep}{y}{end}" for x, y in examples)
    return text, examples


def icl_batch_fn(
    tokenizer,
    batch_size: int,
    block_size: int,
    mixture: dict[str, float] | None = None,
    recurring: float = 0.0,
):
    """``batch_fn(generator) -> (x, y)`` for :func:`gptlib.train.train`: one episode per row.

    Every row is the first
    ``block_size + 1`` tokens of an episode of a task family drawn from ``mixture`` (name ->
    weight, default :data:`MIXTURE`); ``y`` is ``x`` shifted by one.
    ``recurring`` is the share of rows that are instead random tokens of the whole vocabulary
    in which a segment recurs (:func:`gptlib.induction.recurring_batch`): text where copying
    pays, a stand-in for the repeats of ordinary text, on which induction heads form fast.
    All randomness comes from ``generator``, so runs are reproducible.
    """
    mixture = dict(MIXTURE if mixture is None else mixture)
    unknown = [n for n in mixture if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; choose from {sorted(FAMILIES)}")
    if not 0.0 <= recurring < 1.0:
        raise ValueError(f"recurring is a share of the rows: 0 <= recurring < 1, got {recurring}")
    names, weights = list(mixture), list(mixture.values())
    n_rec = int(round(batch_size * recurring))

    def batch_fn(generator: torch.Generator):
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        rows = []
        for _ in range(batch_size - n_rec):
            family = FAMILIES[rng.choices(names, weights)[0]]
            text, _ = episode(family, rng, n_chars=block_size + 1)
            rows.append(tokenizer.encode(text)[: block_size + 1])
        ids = torch.tensor(rows, dtype=torch.long).view(-1, block_size + 1)
        x, y = ids[:, :-1], ids[:, 1:]
        if n_rec:  # induction imports nothing from gptlib: no cycle
            V, half = tokenizer.vocab_size, block_size // 2 - 1
            xr, yr, _ = recurring_batch(generator, n_rec, block_size, V, 3, half, fill=True)
            x, y = torch.cat([x, xr]), torch.cat([y, yr])
        return x, y

    return batch_fn


# --- k-shot evaluation ---------------------------------------------------------------


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
        return (
            f"KShotResult({self.family!r}, n={self.n}, chance={self.chance:.2f}, "
            f"accuracy by shots {{{pairs}}})"
        )


def answer_positions(
    tokenizer, examples: Sequence[tuple[str, str]], sep: str = SEP, end: str = "\n"
) -> list[int]:
    """Positions in ``tokenizer.encode(episode_text)`` whose logits predict each answer's token
    (``sep``, ``end``: the family's format)."""
    pos, out = len(tokenizer.encode(end)) if end else 0, []  # after the leading newline
    for x, y in examples:
        pos += len(tokenizer.encode(x + sep))
        out.append(pos - 1)
        pos += len(tokenizer.encode(y + end))
    return out


@torch.no_grad()
def kshot_accuracy(
    model,
    tokenizer,
    family: TaskFamily,
    shots: Sequence[int],
    n: int = 200,
    seed: int = 0,
    batch_size: int = 64,
) -> KShotResult:
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
            raise ValueError(
                f"a {shots[-1]}-shot {family.name} prompt has {len(ids)} tokens, more than the "
                f"model's block_size {block}: ask for fewer shots"
            )
        pos = answer_positions(tokenizer, examples, family.sep, family.end)
        texts.append(ids)
        positions.append([pos[k] for k in shots])
        targets.append([tokenizer.encode(examples[k][1])[0] for k in shots])
    with eval_mode(model):
        for start in range(0, n, batch_size):
            chunk = texts[start : start + batch_size]
            width = max(len(t) for t in chunk)
            idx = torch.tensor(
                [t + [t[-1]] * (width - len(t)) for t in chunk], device=device
            )  # right pad: causal
            logits = model(idx).float().cpu()
            pos = torch.tensor(positions[start : start + batch_size])
            tgt = torch.tensor(targets[start : start + batch_size])
            at = logits[torch.arange(len(chunk))[:, None], pos]  # (b, len(shots), V)
            correct += (at.argmax(-1) == tgt).float().sum(0)
            nll -= torch.log_softmax(at, -1).gather(-1, tgt[..., None])[..., 0].sum(0)
    return KShotResult(
        family.name, shots, (correct / n).tolist(), n, family.chance, (nll / n).tolist()
    )


def kshot_accuracy_from_prompts(
    model, tokenizer, family: TaskFamily, k: int, n: int = 100, seed: int = 0, description: str = ""
):
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
        prompts.append(family.prompt(examples[:k], examples[k][0], description))
        answers.append(examples[k][1])
    return evaluate_exact_match(model, tokenizer, prompts, answers)
