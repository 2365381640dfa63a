"""Fill in the middle (FIM) and editing by instruction: teaching a left-to-right model to insert.

A GPT reads left to right, so it can continue a file but cannot fill a hole whose *suffix*
is already written (the body of a function whose ``return total`` is already there, a line
in the middle of a file). Bavarian et al. (2022) showed a free trick: move the middle to the
end. Cut a training document at two random character positions into ``prefix``, ``middle``
and ``suffix`` and train on

    PSM:  <PRE> prefix <SUF> suffix <MID> middle <EOT>

(prefix-suffix-middle). The model still only predicts the next token, but when it writes the
middle it has already read both sides. At inference the prompt is
``<PRE> prefix <SUF> suffix <MID>`` and generation runs until ``<EOT>``. Only a fraction of the
documents (the *FIM rate*) is transformed; the rest stay plain left-to-right text, so the
same model keeps doing ordinary completion. SPM (suffix-prefix-middle) is the other order,
``<PRE> <SUF> suffix <MID> prefix middle <EOT>``.

Sentinels. The book's :class:`~gptlib.tokenizer.CharTokenizer` maps single characters to
ids and has no notion of special tokens, so this module reserves four characters of the
Unicode private-use area (U+E000..U+E003), which never occur in source code, as the special
tokens <PRE>, <SUF>, <MID> and <EOT>. :func:`fim_tokenizer` builds a CharTokenizer over
printable ASCII plus those four; :func:`show` prints them by name.

The rest of the module holds what chapter 9 measures with:

* a seeded corpus of small Python functions with unit tests (:func:`function_corpus`), where
  the names are random, so the code *after* a hole often decides what the hole must say;
* holes (:func:`make_hole`), left-to-right completion of a hole (:func:`complete_lines`)
  against :func:`infill`, and scoring (:func:`evaluate_infilling`);
* a seeded dataset of edits by instruction (:func:`edit_dataset`, format
  ``code # instruction: ... edited code``) and :func:`apply_edit`;
* the training recipe (:func:`train_fim_model`, ``python -m gptlib.fim``) that made the
  checkpoints in ``assets/fim/``.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import re
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from gptlib.tokenizer import CharTokenizer

__all__ = [
    "PRE", "SUF", "MID", "EOT", "SENTINELS", "show", "fim_tokenizer",
    "split_document", "psm", "spm", "fim_transform", "apply_fim", "undo_fim", "fim_prompt",
    "infill", "complete_lines", "CodeTask", "make_function", "function_corpus", "Hole", "make_hole",
    "InfillResult", "evaluate_infilling", "middle_loss", "EDIT_KINDS", "EditExample", "make_edit", "edit_dataset",
    "edit_text", "edit_prompt", "apply_edit", "evaluate_edits", "RUNS", "build_stream",
    "train_fim_model", "lm_val_loss", "main",
]

PRE, SUF, MID, EOT = "\ue000", "\ue001", "\ue002", "\ue003"
SENTINELS = (PRE, SUF, MID, EOT)
_NAMES = {PRE: "<PRE>", SUF: "<SUF>", MID: "<MID>", EOT: "<EOT>"}


def show(text: str) -> str:
    """``text`` with the sentinel characters written as ``<PRE>``, ``<SUF>``, ``<MID>``, ``<EOT>``."""
    for ch, name in _NAMES.items():
        text = text.replace(ch, name)
    return text


def fim_tokenizer() -> CharTokenizer:
    """A character tokenizer for code: newline, printable ASCII, then the four sentinels.

    Fixed (not built from a corpus), so every model of the chapter shares it; ids of the
    sentinels are the last four.
    """
    printable = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    return CharTokenizer(printable + list(SENTINELS))


def _check_no_sentinels(text: str, what: str) -> None:
    for ch in SENTINELS:
        if ch in text:
            raise ValueError(f"{what} already contains the sentinel {_NAMES[ch]} (U+{ord(ch):04X}); "
                             "FIM sentinels are reserved: remove them from the text first.")


# --------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------


def split_document(doc: str, rng: random.Random, unit: str = "char") -> tuple[str, str, str]:
    """Cut ``doc`` at two random positions: ``(prefix, middle, suffix)``.

    ``unit="char"``: both cut points are drawn uniformly from ``0..len(doc)`` and sorted, so
    any part may be empty and a cut may fall inside a line, as in Bavarian et al. (2022), who
    split at the character level, before tokenization. ``unit="line"``: the cut points are
    drawn among the starts of lines (and the end), so every part is made of whole lines.
    """
    if unit == "char":
        points = range(len(doc) + 1)
    elif unit == "line":
        points = [0] + [k + 1 for k, ch in enumerate(doc) if ch == "\n" and k + 1 < len(doc)] + [len(doc)]
    else:
        raise ValueError(f"unit must be 'char' or 'line', got {unit!r}.")
    i, j = sorted((rng.choice(points), rng.choice(points)))
    return doc[:i], doc[i:j], doc[j:]


def psm(prefix: str, middle: str, suffix: str) -> str:
    """Prefix-suffix-middle order: ``<PRE>prefix<SUF>suffix<MID>middle<EOT>``."""
    return PRE + prefix + SUF + suffix + MID + middle + EOT


def spm(prefix: str, middle: str, suffix: str) -> str:
    """Suffix-prefix-middle order: ``<PRE><SUF>suffix<MID>prefix middle<EOT>``.

    Prefix and middle stay adjacent, so the middle continues the prefix exactly as in plain text.
    """
    return PRE + SUF + suffix + MID + prefix + middle + EOT


def fim_transform(doc: str, rng: random.Random, mode: str = "psm", unit: str = "char") -> str:
    """Split ``doc`` at two random points (``unit``: see :func:`split_document`) and rearrange
    it (``mode`` ``"psm"`` or ``"spm"``)."""
    if mode not in ("psm", "spm"):
        raise ValueError(f"mode must be 'psm' or 'spm', got {mode!r}.")
    _check_no_sentinels(doc, "the document")
    prefix, middle, suffix = split_document(doc, rng, unit)
    return (psm if mode == "psm" else spm)(prefix, middle, suffix)


def apply_fim(docs: Sequence[str], rate: float, seed: int = 0, spm_rate: float = 0.0,
              unit: str = "char") -> list[str]:
    """The training-data transform: each document, with probability ``rate``, in FIM form.

    Documents left alone become ``doc + <EOT>`` (ordinary left-to-right text ending in the
    end-of-text token); transformed ones are PSM, or SPM with probability ``spm_rate``.
    ``unit`` says where documents may be cut (:func:`split_document`). The same ``seed``
    gives the same output.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"the FIM rate must be in [0, 1], got {rate}.")
    if not 0.0 <= spm_rate <= 1.0:
        raise ValueError(f"spm_rate must be in [0, 1], got {spm_rate}.")
    rng = random.Random(seed)
    out = []
    for doc in docs:
        _check_no_sentinels(doc, "a document")
        if rng.random() < rate:
            out.append(fim_transform(doc, rng, "spm" if rng.random() < spm_rate else "psm", unit))
        else:
            out.append(doc + EOT)
    return out


def undo_fim(text: str) -> str:
    """Recover the original document from ``apply_fim``'s output (plain, PSM or SPM)."""
    if not text.endswith(EOT):
        raise ValueError("not a FIM training document: it must end with <EOT>.")
    body = text[:-1]
    if not body.startswith(PRE):
        return body
    if body.startswith(PRE + SUF):  # SPM: <PRE><SUF>suffix<MID>prefix+middle
        suffix, _, prefix_middle = body[2:].partition(MID)
        return prefix_middle + suffix
    prefix, _, rest = body[1:].partition(SUF)  # PSM: <PRE>prefix<SUF>suffix<MID>middle
    suffix, _, middle = rest.partition(MID)
    return prefix + middle + suffix


def fim_prompt(prefix: str, suffix: str, mode: str = "psm") -> str:
    """The infilling prompt: what the model reads before it writes the middle.

    PSM: ``<PRE>prefix<SUF>suffix<MID>``; SPM: ``<PRE><SUF>suffix<MID>prefix``.
    """
    _check_no_sentinels(prefix + suffix, "the prefix or suffix")
    if mode == "psm":
        return PRE + prefix + SUF + suffix + MID
    if mode == "spm":
        return PRE + SUF + suffix + MID + prefix
    raise ValueError(f"mode must be 'psm' or 'spm', got {mode!r}.")


# --------------------------------------------------------------------------------------
# Inference: infill, and the left-to-right baseline
# --------------------------------------------------------------------------------------


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _generate_text(model, tokenizer, prompt: str, max_new_tokens: int, eos: str, *,
                   greedy: bool, temperature: float, top_p: float | None,
                   generator: torch.Generator | None) -> tuple[str, bool]:
    """Generate after ``prompt`` until the character ``eos`` (returned text excludes it)."""
    from gptlib.sampling import generate

    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=_model_device(model))
    block = model.config.block_size
    if ids.shape[1] >= block:
        ids = ids[:, -(block - 1):]  # keep the end of the prompt (the part next to the hole)
    eos_id = tokenizer.encode(eos)[0]
    out = generate(model, ids, max_new_tokens, greedy=greedy, temperature=temperature, top_p=top_p,
                   eos_token=eos_id, generator=generator)
    new = out[0, ids.shape[1]:].tolist()
    finished = bool(new) and new[-1] == eos_id
    if finished:
        new = new[:-1]
    return tokenizer.decode(new), finished


def infill(model: torch.nn.Module, tokenizer, prefix: str, suffix: str, max_new_tokens: int = 160, *,
           mode: str = "psm", greedy: bool = True, temperature: float = 1.0, top_p: float | None = None,
           generator: torch.Generator | None = None) -> str:
    """Fill the hole between ``prefix`` and ``suffix`` with a FIM-trained model.

    The prompt is ``<EOT>`` (a document boundary, as between training documents) followed by
    :func:`fim_prompt`; generation stops at ``<EOT>`` or after ``max_new_tokens``. Returns the
    middle (without the sentinel). A model never trained on FIM has no idea what the
    sentinels mean, and returns noise.
    """
    text, _ = _generate_text(model, tokenizer, EOT + fim_prompt(prefix, suffix, mode), max_new_tokens, EOT,
                             greedy=greedy, temperature=temperature, top_p=top_p, generator=generator)
    return text


def complete_lines(model: torch.nn.Module, tokenizer, prefix: str, n_lines: int, max_new_tokens: int = 160, *,
                   greedy: bool = True, temperature: float = 1.0, top_p: float | None = None,
                   generator: torch.Generator | None = None) -> str:
    """The left-to-right baseline: continue ``prefix`` for ``n_lines`` lines, blind to the suffix.

    A left-to-right model cannot know where the hole ends, so we give it the number of lines
    of the true middle (a generous oracle) and cut its output there. Each line ends with ``\\n``.
    """
    if n_lines < 1:
        raise ValueError(f"n_lines must be >= 1, got {n_lines}.")
    text = ""
    for _ in range(n_lines):
        budget = max_new_tokens - len(text)
        if budget <= 0:
            break
        line, finished = _generate_text(model, tokenizer, EOT + prefix + text, budget, "\n", greedy=greedy,
                                        temperature=temperature, top_p=top_p, generator=generator)
        text += line.replace(EOT, "") + "\n"
        if not finished:
            break
    return text


# --------------------------------------------------------------------------------------
# A seeded corpus of small functions with unit tests
# --------------------------------------------------------------------------------------

_ARGS = ["values", "items", "nums", "xs", "data", "seq", "numbers", "arr"]
_ACCS = ["total", "acc", "result", "out", "count", "res", "answer", "kept", "found", "best"]
_VARS = ["v", "x", "item", "n", "e", "num", "val", "y"]

# (docstring, function-name stems, body lines, returns a list?) ; {a} arg, {r} accumulator,
# {v} loop variable, {k} constant. Docstrings say what the function does; names are random.
_TEMPLATES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("Return the sum of {a}, each times {k}.", ("scaled_sum", "sum_times", "weighted_total"),
     ("{r} = 0", "for {v} in {a}:", "    {r} += {v} * {k}", "return {r}")),
    ("Count the items of {a} greater than {k}.", ("count_above", "num_greater", "how_many_over"),
     ("{r} = 0", "for {v} in {a}:", "    if {v} > {k}:", "        {r} += 1", "return {r}")),
    ("Return the items of {a} below {k}.", ("keep_below", "small_items", "filter_under"),
     ("{r} = []", "for {v} in {a}:", "    if {v} < {k}:", "        {r}.append({v})", "return {r}")),
    ("Add {k} to each item of {a}.", ("add_to_all", "shift_up", "plus_each"),
     ("{r} = []", "for {v} in {a}:", "    {r}.append({v} + {k})", "return {r}")),
    ("Return the largest item of {a}.", ("largest", "max_of", "biggest"),
     ("{r} = {a}[0]", "for {v} in {a}:", "    if {v} > {r}:", "        {r} = {v}", "return {r}")),
    ("Return the smallest item of {a}.", ("smallest", "min_of", "lowest"),
     ("{r} = {a}[0]", "for {v} in {a}:", "    if {v} < {r}:", "        {r} = {v}", "return {r}")),
    ("Count the multiples of {k} in {a}.", ("count_multiples", "num_divisible", "multiples_of"),
     ("{r} = 0", "for {v} in {a}:", "    if {v} % {k} == 0:", "        {r} += 1", "return {r}")),
    ("Return the product of {a}.", ("product", "multiply_all", "prod_of"),
     ("{r} = 1", "for {v} in {a}:", "    {r} *= {v}", "return {r}")),
    ("Return each item of {a} times {k}.", ("scale_all", "times_each", "multiply_each"),
     ("{r} = []", "for {v} in {a}:", "    {r}.append({v} * {k})", "return {r}")),
    ("Return the sum of the items of {a} above {k}.", ("sum_above", "total_over", "big_sum"),
     ("{r} = 0", "for {v} in {a}:", "    if {v} > {k}:", "        {r} += {v}", "return {r}")),
]


def _product(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


#: What each template computes, for the expected values of the unit tests (a test checks
#: that every template's code agrees with its reference).
_REFERENCE: list[Callable[[list[int], int], Any]] = [
    lambda xs, k: sum(x * k for x in xs),
    lambda xs, k: sum(x > k for x in xs),
    lambda xs, k: [x for x in xs if x < k],
    lambda xs, k: [x + k for x in xs],
    lambda xs, k: max(xs),
    lambda xs, k: min(xs),
    lambda xs, k: sum(x % k == 0 for x in xs),
    lambda xs, k: _product(xs),
    lambda xs, k: [x * k for x in xs],
    lambda xs, k: sum(x for x in xs if x > k),
]


@dataclass
class CodeTask:
    """One function of the corpus: its source, unit tests (assert lines) and parts."""

    source: str
    tests: list[str]
    name: str
    arg: str
    acc: str
    var: str
    k: int
    template: int

    @property
    def program(self) -> str:
        """The function followed by its tests: passes when run."""
        return self.source + "\n" + "\n".join(self.tests) + "\n"

    @property
    def body_lines(self) -> list[str]:
        """The lines after the docstring (each with its ``\\n``)."""
        return self.source.splitlines(keepends=True)[2:]


def make_function(rng: random.Random) -> CodeTask:
    """Draw one function: a template, random names, a constant, and three unit tests."""
    t = rng.randrange(len(_TEMPLATES))
    doc, stems, body = _TEMPLATES[t]
    arg = rng.choice(_ARGS)
    acc = rng.choice(_ACCS)
    var = rng.choice([v for v in _VARS if v not in (arg, acc)])
    k = rng.randint(2, 9)
    name = rng.choice(stems) + rng.choice(["", "_" + str(rng.randint(1, 9))])
    fill = dict(a=arg, r=acc, v=var, k=k)
    lines = [f"def {name}({arg}):", f'    """{doc.format(**fill)}"""']
    lines += ["    " + line.format(**fill) for line in body]
    source = "\n".join(lines) + "\n"
    tests = []
    for _ in range(3):
        xs = [rng.randint(-3, 12) for _ in range(rng.randint(1, 5))]
        tests.append(f"assert {name}({xs!r}) == {_REFERENCE[t](xs, k)!r}")
    return CodeTask(source, tests, name, arg, acc, var, k, t)


def function_corpus(n: int, seed: int = 0, exclude: Sequence[str] | set[str] = ()) -> list[CodeTask]:
    """``n`` distinct functions drawn with ``seed``; sources in ``exclude`` are skipped.

    Used to build held-out sets that share no function with the training set.
    """
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[CodeTask] = []
    tries = 0
    while len(out) < n:
        task = make_function(rng)
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct functions (the template space is too small).")
        if task.source in seen:
            continue
        seen.add(task.source)
        out.append(task)
    return out


@dataclass
class Hole:
    """A hole in a function: the model sees ``prefix`` (and, with FIM, ``suffix``) and must write ``middle``."""

    prefix: str
    middle: str
    suffix: str
    kind: str  # "line", "lines" or "body"

    @property
    def n_lines(self) -> int:
        return self.middle.count("\n")


def make_hole(task: CodeTask, kind: str, rng: random.Random) -> Hole:
    """Cut a hole of one ``kind`` out of a function (whole lines, never the signature or docstring).

    ``"line"``: one body line; ``"lines"``: two or three consecutive body lines;
    ``"body"``: every line between the docstring and the final ``return`` (for unit tests).
    """
    lines = task.source.splitlines(keepends=True)
    first, last = 2, len(lines)  # body lines are lines[2:]
    if kind == "line":
        i = rng.randrange(first, last)
        j = i + 1
    elif kind == "lines":
        size = rng.choice([2, 3])
        i = rng.randrange(first, last - size + 1)
        j = i + size
    elif kind == "body":
        i, j = first, last - 1
    else:
        raise ValueError(f"kind must be 'line', 'lines' or 'body', got {kind!r}.")
    return Hole("".join(lines[:i]), "".join(lines[i:j]), "".join(lines[j:]), kind)


@dataclass
class InfillResult:
    """Scores of one way of filling holes: exact match, and unit-test pass rate for bodies."""

    exact: dict[str, float]
    pass_rate: float | None
    n: dict[str, int]
    samples: list[tuple[Hole, str]] = field(default_factory=list)


def _fill(model, tokenizer, hole: Hole, how: str, max_new_tokens: int, mode: str = "psm") -> str:
    if how == "fim":
        return infill(model, tokenizer, hole.prefix, hole.suffix, max_new_tokens, mode=mode)
    if how == "l2r":
        return complete_lines(model, tokenizer, hole.prefix, hole.n_lines, max_new_tokens)
    raise ValueError(f"how must be 'fim' or 'l2r', got {how!r}.")


def evaluate_infilling(model, tokenizer, tasks: Sequence[CodeTask], how: str, *, kinds=("line", "lines", "body"),
                       seed: int = 0, max_new_tokens: int = 160, mode: str = "psm",
                       execute_many: Callable[[list[str]], list[Any]] | None = None) -> InfillResult:
    """Fill one hole of each kind in every task (greedy) and score the fills.

    ``how="fim"`` uses :func:`infill` (prefix and suffix, prompt order ``mode``), ``"l2r"`` :func:`complete_lines`
    (prefix only, told the hole's number of lines). Exact match compares the middle
    character for character. For ``"body"`` holes, if ``execute_many`` (e.g.
    ``gptlib.codex.execute_many``) is given, the filled function runs with its unit tests and
    the pass rate is the share that passes. Holes are the same for every model given ``seed``.
    """
    rng = random.Random(seed)
    holes = [(task, make_hole(task, kind, rng)) for task in tasks for kind in kinds]
    hits: dict[str, list[bool]] = {kind: [] for kind in kinds}
    programs, samples = [], []
    for task, hole in holes:
        fill = _fill(model, tokenizer, hole, how, max_new_tokens, mode)
        samples.append((hole, fill))
        hits[hole.kind].append(fill == hole.middle)
        if hole.kind == "body":
            programs.append(hole.prefix + fill + hole.suffix + "\n" + "\n".join(task.tests) + "\n")
    pass_rate = None
    if programs and execute_many is not None:
        results = execute_many(programs)
        pass_rate = sum(bool(r.passed) for r in results) / len(results)
    return InfillResult({k: sum(v) / max(1, len(v)) for k, v in hits.items()}, pass_rate,
                        {k: len(v) for k, v in hits.items()}, samples)


@torch.no_grad()
def middle_loss(model, tokenizer, hole: Hole, how: str, mode: str = "psm") -> float:
    """Mean loss (nats per character) of the true middle, as each model would read it.

    ``how="fim"``: after the FIM prompt (prefix and suffix); ``"l2r"``: after the prefix
    alone. The ``<EOT>`` after the middle is not counted, so both score the same characters.
    A sharper measure than exact match: it rewards every character made more likely.
    """
    if how == "fim":
        context = EOT + fim_prompt(hole.prefix, hole.suffix, mode)
    elif how == "l2r":
        context = EOT + hole.prefix
    else:
        raise ValueError(f"how must be 'fim' or 'l2r', got {how!r}.")
    ids = tokenizer.encode(context + hole.middle)[-(model.config.block_size + 1):]
    n = len(hole.middle)
    x = torch.tensor([ids[:-1]], device=_model_device(model))
    y = torch.tensor([ids[1:]], device=_model_device(model))
    logits = model(x)[:, -n:].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y[:, -n:].reshape(-1)).item()


# --------------------------------------------------------------------------------------
# Editing by instruction
# --------------------------------------------------------------------------------------

EDIT_KINDS = ("rename", "docstring", "return", "wrap")
_NEW_NAMES = ["tally", "agg", "partial", "memo", "buf", "score", "outcome", "summary"]


@dataclass
class EditExample:
    kind: str
    before: str
    instruction: str
    after: str


def _strip_docstring(source: str) -> str:
    lines = source.splitlines(keepends=True)
    return lines[0] + "".join(lines[2:])


def make_edit(task: CodeTask, kind: str, rng: random.Random) -> EditExample:
    """One edit of ``task``'s function (docstring removed, to keep examples short).

    ``rename``: rename the accumulator or the loop variable; ``docstring``: add a given
    docstring; ``return``: change the returned expression; ``wrap``: wrap top-level
    statements into a function with a given name that returns the accumulator.
    """
    code = _strip_docstring(task.source)
    if kind == "rename":
        old = rng.choice([task.acc, task.var])
        new = rng.choice([n for n in _NEW_NAMES if n not in code])
        after = re.sub(rf"\b{re.escape(old)}\b", new, code)
        return EditExample(kind, code, f"rename {old} to {new}", after)
    if kind == "docstring":
        doc = task.source.splitlines()[1].strip()[3:-3]
        return EditExample(kind, code, f"add the docstring {doc}", task.source)
    if kind == "return":
        expr = rng.choice([f"{task.acc} * {rng.randint(2, 9)}", f"{task.acc} + {rng.randint(1, 9)}",
                           f"-{task.acc}", f"len({task.acc})" if "[]" in code else f"abs({task.acc})"])
        lines = code.splitlines(keepends=True)
        after = "".join(lines[:-1]) + f"    return {expr}\n"
        return EditExample(kind, code, f"return {expr} instead", after)
    if kind == "wrap":
        lines = code.splitlines(keepends=True)[1:-1]  # drop the def line and the return
        snippet = "".join(line[4:] for line in lines)
        after = _strip_docstring(task.source)
        return EditExample(kind, snippet, f"wrap in {task.name}({task.arg}) returning {task.acc}", after)
    raise ValueError(f"unknown edit kind {kind!r}; choose from {EDIT_KINDS}.")


def edit_dataset(n: int, seed: int = 0, exclude: Sequence[str] | set[str] = ()) -> list[EditExample]:
    """``n`` edits, kinds in turn, on distinct functions drawn with ``seed`` (skipping ``exclude``)."""
    tasks = function_corpus(n, seed, exclude)
    rng = random.Random(seed + 1)
    return [make_edit(task, EDIT_KINDS[i % len(EDIT_KINDS)], rng) for i, task in enumerate(tasks)]


def edit_prompt(before: str, instruction: str) -> str:
    """``code`` then ``# instruction: ...``: the model writes the edited code after it."""
    if "\n" in instruction:
        raise ValueError("the instruction must be one line (it becomes a '# instruction:' comment).")
    return before + "# instruction: " + instruction + "\n"


def edit_text(example: EditExample) -> str:
    """A training document: ``code # instruction: ... edited code``."""
    return edit_prompt(example.before, example.instruction) + example.after


def apply_edit(model, tokenizer, before: str, instruction: str, max_new_tokens: int = 200) -> str:
    """Ask an edit-trained model for the edited code (greedy, until ``<EOT>``)."""
    text, _ = _generate_text(model, tokenizer, EOT + edit_prompt(before, instruction), max_new_tokens, EOT,
                             greedy=True, temperature=1.0, top_p=None, generator=None)
    return text


def evaluate_edits(model, tokenizer, examples: Sequence[EditExample], outputs: list[str] | None = None
                   ) -> dict[str, float]:
    """Exact match of :func:`apply_edit` per edit kind (and ``"all"``).

    Pass a list as ``outputs`` to receive the model's edited code, one entry per example.
    """
    hits: dict[str, list[bool]] = {}
    for ex in examples:
        out = apply_edit(model, tokenizer, ex.before, ex.instruction, max_new_tokens=len(ex.after) + 40)
        hits.setdefault(ex.kind, []).append(out == ex.after)
        if outputs is not None:
            outputs.append(out)
    scores = {k: sum(v) / len(v) for k, v in hits.items()}
    scores["all"] = sum(sum(v) for v in hits.values()) / max(1, sum(len(v) for v in hits.values()))
    return scores


# --------------------------------------------------------------------------------------
# Training recipe
# --------------------------------------------------------------------------------------

#: The runs behind assets/fim/: model shape and training budget (same for L2R and FIM).
RUNS: dict[str, dict[str, Any]] = {
    "cpu": dict(n_layer=3, n_head=4, n_embd=64, block_size=256, batch_size=16, max_iters=1000, lr=3e-3,
                n_train=20000, edit_iters=300, n_edit=8000, unit="line", spm_rate=1.0),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, max_iters=5000, lr=1e-3,
                n_train=100000, edit_iters=2000, n_edit=40000, unit="line", spm_rate=1.0),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=256, batch_size=8, max_iters=30, lr=3e-3,
                 n_train=300, edit_iters=20, n_edit=200, unit="line", spm_rate=1.0),
}


def build_stream(docs: Sequence[str], tokenizer, rate: float, epochs: int = 1, seed: int = 0,
                 unit: str = "char", spm_rate: float = 0.0) -> torch.Tensor:
    """Token ids of ``epochs`` passes over ``docs``, each pass FIM-transformed afresh at ``rate``.

    Every document starts after an ``<EOT>`` (also the first), as at inference.
    """
    passes = ("".join(apply_fim(docs, rate, seed=seed + e, spm_rate=spm_rate, unit=unit)) for e in range(epochs))
    text = EOT + "".join(passes)
    return torch.tensor(tokenizer.encode(text), dtype=torch.uint8 if tokenizer.vocab_size <= 256 else torch.long)


def lm_val_loss(model, data: torch.Tensor, block_size: int | None = None, max_windows: int | None = None) -> float:
    """Mean next-token loss over consecutive non-overlapping windows of ``data`` (no randomness)."""
    block_size = block_size or model.config.block_size
    device = _model_device(model)
    n = (data.numel() - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"need at least block_size + 1 = {block_size + 1} tokens, got {data.numel()}.")
    x = data[: n * block_size].long().view(n, block_size)
    y = data[1: n * block_size + 1].long().view(n, block_size)
    was = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 32):
            logits = model(x[i:i + 32].to(device))
            total += torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), y[i:i + 32].to(device).reshape(-1),
                reduction="sum").item()
    model.train(was)
    return total / (n * block_size)


def train_fim_model(which: str, run: str | dict[str, Any] = "cpu", *, init: torch.nn.Module | None = None,
                    seed: int = 0, device: str | None = None, progress: bool = False):
    """Train one of the chapter's models and return ``(model, tokenizer, TrainResult)``.

    ``which``: ``"l2r"`` (FIM rate 0), ``"fim"`` (FIM rate 0.5, PSM) — same data, same budget —
    or ``"edit"`` (fine-tunes ``init``, usually the FIM model, on edits). ``run`` names an entry
    of :data:`RUNS` (or is such a dict). Training functions are drawn with seed 0; held-out sets
    with other seeds, excluding these.
    """
    from gptlib.model import GPT, GPTConfig
    from gptlib.train import TrainConfig, train

    cfg = RUNS[run] if isinstance(run, str) else run
    tok = fim_tokenizer()
    tasks = function_corpus(cfg["n_train"], seed=seed)
    if which in ("l2r", "fim"):
        rate = 0.0 if which == "l2r" else cfg.get("fim_rate", 0.5)
        tokens_needed = cfg["max_iters"] * cfg["batch_size"] * cfg["block_size"]
        per_epoch = sum(len(t.source) + 4 for t in tasks)
        epochs = max(1, min(20, round(tokens_needed / per_epoch)))
        data = build_stream([t.source for t in tasks], tok, rate, epochs=epochs, seed=seed, unit=cfg["unit"],
                            spm_rate=cfg.get("spm_rate", 0.0))
        iters = cfg["max_iters"]
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                              n_head=cfg["n_head"], n_embd=cfg["n_embd"]))
        lr = cfg["lr"]
    elif which == "edit":
        if init is None:
            raise ValueError("the edit model is fine-tuned from another model: pass init=<the FIM model>.")
        # Edits of the first n_edit training functions (function_corpus(n, seed) is a prefix of the
        # training corpus), so a held-out set that excludes the training functions excludes these too.
        edits = edit_dataset(cfg["n_edit"], seed=seed)
        data = torch.tensor(tok.encode(EOT + "".join(edit_text(e) + EOT for e in edits)), dtype=torch.uint8)
        iters = cfg["edit_iters"]
        model = init
        lr = cfg["lr"] / 2
    else:
        raise ValueError(f"which must be 'l2r', 'fim' or 'edit', got {which!r}.")
    tcfg = TrainConfig(max_iters=iters, batch_size=cfg["batch_size"], block_size=cfg["block_size"], lr=lr,
                       min_lr=lr / 10, warmup_iters=min(100, iters // 10), eval_interval=max(iters, 1),
                       eval_iters=1, log_interval=max(1, iters // 30), progress=progress, seed=seed + 1,
                       device=device, out_dir=None, weight_decay=0.1)
    result = train(model, tcfg, data, None)
    return result.model, tok, result


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m gptlib.fim --run cpu --out assets/fim``: train L2R, FIM, then the edit model; save all three."""
    from gptlib.checkpoint import save_model
    from gptlib.device import seed_everything

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--run", default="cpu", choices=sorted(RUNS))
    parser.add_argument("--out", default="assets/fim")
    parser.add_argument("--which", default="l2r,fim,edit", help="comma-separated subset of l2r,fim,edit")
    parser.add_argument("--device", default=None)
    parser.add_argument("--fim_rate", type=float, default=None, help="override the FIM model's rate")
    parser.add_argument("--spm_rate", type=float, default=None, help="override the share of FIM documents in SPM order")
    args = parser.parse_args(argv)
    run = dict(RUNS[args.run])
    for key in ("fim_rate", "spm_rate"):
        if getattr(args, key) is not None:
            run[key] = getattr(args, key)
    out = Path(args.out)
    which = args.which.split(",")
    for name in which:
        seed_everything(0)
        start = time.perf_counter()
        if name == "edit":
            from gptlib.checkpoint import load_model
            init = load_model(out / "fim" / "model.safetensors", device=args.device, eval_mode=False).float()
            model, tok, result = train_fim_model("edit", run, init=init, device=args.device, progress=True)
        else:
            model, tok, result = train_fim_model(name, run, device=args.device, progress=True)
        seconds = time.perf_counter() - start
        # fp16 halves the files (assets budget); load with load_model(...).float().
        save_model(out / name / "model.safetensors", copy.deepcopy(model).half())
        tok.save(out / name / "tokenizer.json")
        losses = [h["train_loss"] for h in result.history if "train_loss" in h]
        info = {"which": name, "run": args.run, "config": run, "seconds": round(seconds, 1),
                "final_train_loss": losses[-1] if losses else None,
                "command": f"python -m gptlib.fim --run {args.run} --which {name} --out {args.out}"
                + "".join(f" --{k} {getattr(args, k)}" for k in ("fim_rate", "spm_rate")
                          if getattr(args, k) is not None)}
        (out / name / "ckpt.json").write_text(json.dumps(info, indent=1))
        print(f"{name}: {seconds:.0f} s, final train loss {info['final_train_loss']:.3f}", flush=True)


if __name__ == "__main__":
    main()
