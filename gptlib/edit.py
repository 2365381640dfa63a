"""Editing by instruction: code, a command, the edited code, as one left-to-right document.

OpenAI's 2022 *edit* mode took a text and an instruction ("rename this variable") and returned
the changed text; how it was trained has not been published beyond instruction tuning. The toy
version here writes each example as one training document that a FIM-trained model is
fine-tuned on::

    <code without its docstring>
    # instruction: rename big_total to tally
    <the edited code><EOT>

Four kinds of edits (:data:`EDIT_KINDS`) on the functions of :mod:`gptlib.toycode`: rename
the accumulator, add a given docstring, change the returned expression, wrap top-level
statements into a named function. Every edit is mostly *copying* (the whole input with one
change), so a model that cannot copy from a hundred characters back scores 0 exact match.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from gptlib.fim import EOT, _generate_text
from gptlib.toycode import NAMES, CodeTask, function_corpus

__all__ = [
    "EDIT_KINDS",
    "EditExample",
    "make_edit",
    "edit_dataset",
    "edit_prompt",
    "edit_text",
    "apply_edit",
    "edit_applied",
    "evaluate_edits",
    "extend_positions",
    "edit_batches",
    "exact_match_ci95",
]

EDIT_KINDS = ("rename", "docstring", "return", "wrap")


@dataclass
class EditExample:
    """One edit: ``before`` code, a one-line ``instruction``, the ``after`` code."""

    kind: str
    before: str
    instruction: str
    after: str


def _strip_docstring(source: str) -> str:
    lines = source.splitlines(keepends=True)
    return lines[0] + "".join(lines[2:])


def make_edit(task: CodeTask, kind: str, rng: random.Random) -> EditExample:
    """One edit of ``task``'s function (docstring removed, to keep examples short).

    ``rename``: rename the accumulator to another name of the pool; ``docstring``: add the
    given docstring; ``return``: change the returned expression; ``wrap``: wrap the loop into
    a function with a given name that returns the accumulator.
    """
    code = _strip_docstring(task.source)
    if kind == "rename":
        new = rng.choice([n for n in NAMES if n not in code])
        after = re.sub(rf"\b{re.escape(task.acc)}\b", new, code)
        return EditExample(kind, code, f"rename {task.acc} to {new}", after)
    if kind == "docstring":
        doc = task.source.splitlines()[1].strip()[3:-3]
        return EditExample(kind, code, f"add the docstring {doc}", task.source)
    if kind == "return":
        acc = task.acc
        expr = rng.choice(
            [
                f"{acc} * {rng.randint(2, 9)}",
                f"{acc} + {rng.randint(1, 9)}",
                f"-{acc}",
                f"len({acc})" if "[]" in code else f"abs({acc})",
            ]
        )
        lines = code.splitlines(keepends=True)
        after = "".join(lines[:-1]) + f"    return {expr}\n"
        return EditExample(kind, code, f"return {expr} instead", after)
    if kind == "wrap":
        lines = code.splitlines(keepends=True)[1:-1]  # drop the def line and the return
        snippet = "".join(line[4:] for line in lines)
        instruction = f"wrap in {task.name}({task.arg}) returning {task.acc}"
        return EditExample(kind, snippet, instruction, code)
    raise ValueError(f"unknown edit kind {kind!r}; choose from {EDIT_KINDS}.")


def edit_dataset(
    n: int, seed: int = 0, exclude: Sequence[str] | set[str] = ()
) -> list[EditExample]:
    """``n`` edits, kinds in turn, on distinct functions drawn with ``seed`` (minus ``exclude``)."""
    tasks = function_corpus(n, seed, exclude)
    rng = random.Random(seed + 1)
    return [make_edit(task, EDIT_KINDS[i % len(EDIT_KINDS)], rng) for i, task in enumerate(tasks)]


def edit_prompt(before: str, instruction: str) -> str:
    """``code`` then ``# instruction: ...``: the model writes the edited code after it."""
    if "\n" in instruction:
        raise ValueError(
            "the instruction must be one line (it becomes a '# instruction:' comment)."
        )
    return before + "# instruction: " + instruction + "\n"


def edit_text(example: EditExample) -> str:
    """A training document: ``code # instruction: ... edited code``."""
    return edit_prompt(example.before, example.instruction) + example.after


def apply_edit(model, tokenizer, before: str, instruction: str, max_new_tokens: int = 200) -> str:
    """Ask an edit-trained model for the edited code (greedy, until ``<EOT>``)."""
    text, _ = _generate_text(
        model,
        tokenizer,
        EOT + edit_prompt(before, instruction),
        max_new_tokens,
        EOT,
        greedy=True,
        temperature=1.0,
        top_p=None,
        generator=None,
    )
    return text


def _changed_lines(example: EditExample) -> list[str]:
    before = set(example.before.splitlines())
    return [line for line in example.after.splitlines() if line not in before]


def edit_applied(example: EditExample, output: str) -> bool:
    """Did ``output`` make the requested change, whatever else it got wrong?

    True when every line of the target that is not in the input (the renamed lines, the new
    docstring, the new ``return``, the new ``def``) appears in ``output``, and, for a rename,
    the old name is gone. A softer score than exact match: it asks whether the model
    understood the instruction, not whether it copied the rest of the code faithfully.
    """
    lines = set(output.splitlines())
    if not all(line in lines for line in _changed_lines(example)):
        return False
    if example.kind == "rename":
        old = example.instruction.split()[1]
        return re.search(rf"\b{re.escape(old)}\b", output) is None
    return True


def evaluate_edits(
    model, tokenizer, examples: Sequence[EditExample], outputs: list[str] | None = None
) -> dict[str, float]:
    """Exact match of :func:`apply_edit` per edit kind (and ``"all"``).

    Pass a list as ``outputs`` to receive the model's edited code, one entry per example
    (score them with :func:`edit_applied` for the softer measure).
    """
    hits: dict[str, list[bool]] = {}
    for ex in examples:
        out = apply_edit(
            model, tokenizer, ex.before, ex.instruction, max_new_tokens=len(ex.after) + 40
        )
        hits.setdefault(ex.kind, []).append(out == ex.after)
        if outputs is not None:
            outputs.append(out)
    scores = {k: sum(v) / len(v) for k, v in hits.items()}
    scores["all"] = sum(sum(v) for v in hits.values()) / max(1, sum(len(v) for v in hits.values()))
    return scores


def extend_positions(model, block_size: int):
    """A copy of ``model`` (a :class:`gptlib.model.GPT`) with ``block_size`` learned positions.

    An edit document (code, instruction, edited code) is about twice as long as the code, up
    to ~430 characters here, and the edited code can only be *copied* if the input is still in
    the context: a model with 192 positions has lost the start of the input by the time it
    writes the end of the output. The first positions keep their trained embeddings, the new
    ones start as in a fresh model and are learned while fine-tuning on edits.
    """
    from gptlib.model import GPT

    old = model.config.block_size
    if block_size < old:
        raise ValueError(
            f"block_size {block_size} is smaller than the model's {old}; extend, do not crop."
        )
    config = dataclasses.replace(model.config, block_size=block_size)
    new = GPT(config).to(next(model.parameters()).device)
    state = {k: v.float() for k, v in model.state_dict().items()}
    wpe = new.wpe.weight.detach().clone()
    wpe[:old] = state["wpe.weight"]
    state["wpe.weight"] = wpe
    new.load_state_dict(state)
    return new


def edit_batches(
    examples: Sequence[EditExample], tokenizer, block_size: int, batch_size: int
) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """``batch_fn(generator)`` for :func:`gptlib.train.train`: windows that start at an ``<EOT>``.

    The edit documents are joined, each after an ``<EOT>``; every window of ``block_size``
    tokens starts at the beginning of a document, as :func:`apply_edit`'s prompt does, so the
    model learns to write the edited code with the whole input in view.
    """
    longest = max(len(edit_text(e)) for e in examples) + 2
    if block_size < longest:
        raise ValueError(
            f"block_size {block_size} cannot hold the longest edit document ({longest} "
            f"characters with its <EOT>s); use block_size >= {longest}."
        )
    text = EOT + "".join(edit_text(e) + EOT for e in examples) + EOT * block_size
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    eot = tokenizer.encode(EOT)[0]
    starts = (data[: -block_size - 1] == eot).nonzero().flatten()
    starts = starts[: len(examples)]  # one start per document (not in the padding)
    offsets = torch.arange(block_size)

    def batch_fn(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = starts[torch.randint(len(starts), (batch_size,), generator=generator)]
        idx = i[:, None] + offsets
        return data[idx], data[idx + 1]

    return batch_fn


def exact_match_ci95(
    examples: Sequence[EditExample], outputs: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """95% Wilson interval of the exact-match rate per edit kind (and ``"all"``).

    Wilson's interval stays inside [0, 1] and is not degenerate at 0 or n hits, which is
    where a small model's scores sit.
    """
    if len(examples) != len(outputs):
        raise ValueError(
            f"{len(examples)} examples but {len(outputs)} outputs; pass one per example."
        )
    hits: dict[str, list[bool]] = {}
    for ex, out in zip(examples, outputs):
        hits.setdefault(ex.kind, []).append(out == ex.after)
    hits["all"] = [h for kind in list(hits) for h in hits[kind]]
    z = 1.959964
    result = {}
    for kind, h in hits.items():
        n, p = len(h), sum(h) / len(h)
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
        result[kind] = (max(0.0, centre - half), min(1.0, centre + half))
    return result
