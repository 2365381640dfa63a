"""The fill-in-the-middle transform: sentinels, PSM and SPM, and the training stream.

Cut a document at two random character positions into ``prefix``, ``middle`` and ``suffix``
and write it as

    PSM:  <PRE> prefix <SUF> suffix <MID> middle <EOT>
    SPM:  <PRE> <SUF> suffix <MID> prefix middle <EOT>

(Bavarian et al. 2022). Only a share of the documents (the *FIM rate*) is rearranged; the
rest stay plain text ending in ``<EOT>``. The book's :class:`~gptlib.tokenizer.CharTokenizer`
has no special tokens, so four characters of Unicode's private-use area (U+E000..U+E003),
which never occur in source code, serve as <PRE>, <SUF>, <MID> and <EOT>;
:func:`show` prints them by name. Pure text, no model: :mod:`gptlib.fim` re-exports all of it
and adds infilling and its measurements.
"""

from __future__ import annotations

import random
import string
from typing import Sequence

import torch

from gptlib.tokenizer import CharTokenizer

__all__ = [
    "PRE",
    "SUF",
    "MID",
    "EOT",
    "SENTINELS",
    "show",
    "fim_tokenizer",
    "split_document",
    "psm",
    "spm",
    "fim_transform",
    "apply_fim",
    "undo_fim",
    "fim_prompt",
    "build_stream",
]

PRE, SUF, MID, EOT = "\ue000", "\ue001", "\ue002", "\ue003"
SENTINELS = (PRE, SUF, MID, EOT)
_NAMES = {PRE: "<PRE>", SUF: "<SUF>", MID: "<MID>", EOT: "<EOT>"}


def show(text: str) -> str:
    """``text`` with the sentinel characters written as ``<PRE>``, ``<SUF>``, ``<MID>``,
    ``<EOT>``."""
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
            raise ValueError(
                f"{what} already contains the sentinel {_NAMES[ch]} "
                f"(U+{ord(ch):04X}); "
                "FIM sentinels are reserved: remove them from the text first."
            )


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
        starts = [k + 1 for k, ch in enumerate(doc) if ch == "\n" and k + 1 < len(doc)]
        points = [0] + starts + [len(doc)]
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


def apply_fim(
    docs: Sequence[str], rate: float, seed: int = 0, spm_rate: float = 0.0, unit: str = "char"
) -> list[str]:
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


def build_stream(
    docs: Sequence[str],
    tokenizer,
    rate: float,
    epochs: int = 1,
    seed: int = 0,
    unit: str = "char",
    spm_rate: float = 0.0,
) -> torch.Tensor:
    """Token ids of ``epochs`` passes over ``docs``, each pass FIM-transformed afresh at ``rate``.

    Every document starts after an ``<EOT>`` (also the first), as at inference. With
    ``rate=0`` this is the plain left-to-right stream.
    """
    passes = (
        "".join(apply_fim(docs, rate, seed=seed + e, spm_rate=spm_rate, unit=unit))
        for e in range(epochs)
    )
    text = EOT + "".join(passes)
    dtype = torch.uint8 if tokenizer.vocab_size <= 256 else torch.long
    return torch.tensor(tokenizer.encode(text), dtype=dtype)
