"""Codex's evaluation, end to end: problems → completions → verdicts → pass@k.

Codex (Chen et al., 2021) is scored by *running* what it writes. A problem is a function
signature with a docstring (the prompt) and hidden unit tests; the model writes the body
(the completion), sampling stops at the first line that starts a new top-level block
(:data:`STOP_SEQUENCES`), :mod:`gptlib.verdict` runs the tests against the completion
(the completion in the sandbox, the tests outside it), and pass@k (:mod:`gptlib.passk`)
turns the per-sample verdicts into a score.

Two benchmarks share that format: HumanEval, the paper's 164 hand-written problems
(:func:`load_humaneval`), and :mod:`gptlib.codebench`, problems composed from primitives
that a model trained in minutes can solve. The chapter's model is made by the recipe
``python -m gptlib.recipes codex`` and loaded with ``gptlib.assets.load("codex/small")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gptlib.passk import (
    HumanEvalProblem,
    MalformedSampleError,
    build_program,
    counts_by_task,
    load_humaneval,
    mean_pass_at_k,
    naive_pass_at_k,
    pass_at_k,
)
from gptlib.sandbox import ExecutionResult, execute, execute_many
from gptlib.verdict import run_tests, run_tests_many

__all__ = [
    "STOP_SEQUENCES",
    "truncate_at_stop",
    "SampleResult",
    "evaluate_completions",
    "pass_at_k_table",
    "sample_completions",
    "completion_logprobs",
    "ranked_picks",
    "ranked_pass_at_1",
    "code_tokenizer",
    "to_code_symbols",
    "ROW_END",
    "problem_batches",
    "constant_positions",
    "constant_nll",
    "passk_by_temperature",
    "pass_at_k",
    "naive_pass_at_k",
    "mean_pass_at_k",
    "HumanEvalProblem",
    "MalformedSampleError",
    "load_humaneval",
    "build_program",
    "counts_by_task",
    "ExecutionResult",
    "execute",
    "execute_many",
    "run_tests",
    "run_tests_many",
]

# Codex stops sampling at a line that starts something new at the top level: the body is done.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def truncate_at_stop(completion: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut ``completion`` at the first stop sequence (what sampling with ``stop=`` does)."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


@dataclass(frozen=True)
class SampleResult:
    task_id: str
    completion: str
    result: ExecutionResult

    @property
    def passed(self) -> bool:
        return self.result.passed


def evaluate_completions(
    problems: Sequence[HumanEvalProblem],
    samples: Sequence[tuple[str, str]],
    timeout: float = 5.0,
    workers: int | None = None,
    progress: bool = True,
    programs_per_process: int = 1,
) -> list[SampleResult]:
    """Judge every ``(task_id, completion)`` against its problem's tests
    (:func:`gptlib.verdict.run_tests_many`: the tests never run inside the program's process).

    Identical samples are judged once and share the verdict (at low temperature most
    samples are the same text, so this saves most of the work). ``programs_per_process``
    > 1 serves several completions of one problem from one sandboxed process (bulk scoring
    of a model's own samples; a fresh process follows any that changed shared state).
    """
    by_id = {p.task_id: p for p in problems}
    for i, sample in enumerate(samples):
        if not (
            isinstance(sample, (tuple, list))
            and len(sample) == 2
            and all(isinstance(s, str) for s in sample)
        ):
            raise MalformedSampleError(
                f"sample {i}: expected (task_id, completion) strings, got {sample!r:.80}."
            )
        if sample[0] not in by_id:
            raise MalformedSampleError(
                f"sample {i}: unknown task_id {sample[0]!r}; known ids look like "
                f"{next(iter(by_id), '<none>')!r}."
            )
    unique = sorted(set(map(tuple, samples)))  # sorted: a problem's samples are neighbours
    results = run_tests_many(
        [by_id[t] for t, _ in unique],
        [c for _, c in unique],
        timeout=timeout,
        workers=workers,
        programs_per_process=programs_per_process,
        progress=progress,
    )
    verdicts = dict(zip(unique, results))
    return [SampleResult(t, c, verdicts[(t, c)]) for t, c in map(tuple, samples)]


def sample_completions(
    model,
    tokenizer,
    problems: Sequence[HumanEvalProblem],
    n: int,
    *,
    temperature: float = 0.8,
    top_p: float | None = 0.95,
    max_new_tokens: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """``n`` sampled completions per problem (nucleus sampling, Codex's stop sequences).

    Returns ``(task_id, completion)`` pairs, ``n`` per problem, in problem order. Prompts are
    mapped to the tokenizer's symbols (:func:`to_code_symbols` for the code tokenizer). A
    prompt too long to leave ``max_new_tokens`` of room in the model's context keeps only its
    last ``block_size - max_new_tokens`` tokens: the model could not see more of it anyway
    while writing, and this way every step runs with the KV cache.
    """
    import torch
    from tqdm.auto import tqdm

    from gptlib.sampling import generate

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = [tokenizer.encode(s) for s in STOP_SEQUENCES]
    newline = tokenizer.encode("\n")[0]  # rows that stopped early are padded with newlines
    samples = []
    for problem in tqdm(
        problems, desc=f"sampling T={temperature}", disable=not progress, leave=False
    ):
        room = max(1, model.config.block_size - max_new_tokens)
        ids = torch.tensor(
            [tokenizer.encode(to_code_symbols(problem.prompt))[-room:]] * n, device=device
        )
        with torch.no_grad():
            out = generate(
                model,
                ids,
                max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                pad_token=newline,
                generator=generator,
            )
        for row in out[:, ids.shape[1] :].tolist():
            samples.append(
                (problem.task_id, truncate_at_stop(tokenizer.decode(row)).rstrip("\n") + "\n")
            )
    return samples


def pass_at_k_table(
    results: Sequence[SampleResult], ks: Sequence[int] = (1, 10, 100), naive: bool = False
) -> dict[int, float]:
    """pass@k for each k that every problem has enough samples for (the mean over problems)."""
    counts = counts_by_task([(r.task_id, r.passed) for r in results])
    n_min = min(n for n, _ in counts.values())
    estimator = naive_pass_at_k if naive else pass_at_k
    return {
        k: sum(estimator(n, c, k) for n, c in counts.values()) / len(counts)
        for k in ks
        if k <= n_min
    }


# --------------------------------------------------------------------------------------
# The chapter's small code model
# --------------------------------------------------------------------------------------

# Printable ASCII, newline and tab: every character of Python source we train on. Other
# characters (a few in docstrings) become "?" so any prompt can be encoded.
CODE_SYMBOLS = "\t\n" + "".join(chr(c) for c in range(32, 127))


def code_tokenizer():
    """The character tokenizer of the chapter's code models (fixed: 97 symbols)."""
    from gptlib.tokenizer import CharTokenizer

    return CharTokenizer(CODE_SYMBOLS)


def to_code_symbols(text: str) -> str:
    """Replace characters outside :data:`CODE_SYMBOLS` by ``?`` (and CRLF by LF)."""
    allowed = set(CODE_SYMBOLS)
    return "".join(ch if ch in allowed else "?" for ch in text.replace("\r\n", "\n"))


#: What follows a body in a training row: a blank line and the next ``def``, the stop sequence
#: that ends sampling. The model learns where a body ends without a second problem in view.
ROW_END = "\n\ndef"


def problem_batches(
    problems: Sequence[HumanEvalProblem],
    tokenizer,
    batch_size: int,
    block_size: int,
    offset_share: float = 0.0,
):
    """A ``batch_fn(generator) -> (x, y)`` for :func:`gptlib.train.train`: one problem per row.

    Each row is ``prompt + body + ROW_END`` starting at position 0, which is where the prompt
    sits when the model is sampled; the targets after the row's end are ignored (-100). A
    window cut anywhere from one long text (the obvious layout) puts the end of the previous
    problem, with its own constants, in view of every body, and the prompt almost never at
    position 0: trained that way for 700 steps, ``codex/small`` never learned to copy a digit
    from its docstring (2.0 nats on the body's constants, a uniform guess among 9 digits is
    2.2) while the rest of the body was at 0.01 nats. In short probes on one-step problems
    (a 2-layer model, 900 steps) rows from position 0 brought the constants to 0.05-0.3 nats,
    rows packed with several problems left them at 1.4-1.6.

    ``offset_share``: the share of batches whose rows start after a random run of newlines
    (the separator between problems), which trains every position up to ``block_size``. The
    same probes say it costs the copying dearly (1.1 nats with 15% or 50% of rows shifted,
    1.9 when the shifted rows came only in the last third): the small model copies by
    position. The recipe leaves it at 0, so positions beyond the longest training program
    (176 characters) are never trained, and the deeper tier's longer programs run into them.
    """
    import torch

    ignore = -100
    newline = tokenizer.encode("\n")[0]
    rows = []
    for p in problems:
        ids = tokenizer.encode(to_code_symbols(p.prompt + p.canonical_solution) + ROW_END)
        if len(ids) > block_size + 1:
            raise ValueError(f"{p.task_id}: {len(ids)} tokens do not fit block_size {block_size}")
        rows.append(ids)

    def batch_fn(generator: torch.Generator):
        picks = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
        shifted = bool(torch.rand((), generator=generator) < offset_share)
        seqs = []
        for i in picks:
            room = block_size + 2 - len(rows[i])  # shifts 0 .. room - 1 keep the row in the block
            k = int(torch.randint(room, (1,), generator=generator)) if shifted else 0
            seqs.append((k, [newline] * k + rows[i]))
        length = max(len(seq) for _, seq in seqs) - 1
        x = torch.full((batch_size, length), newline, dtype=torch.long)
        y = torch.full((batch_size, length), ignore, dtype=torch.long)
        for r, (k, seq) in enumerate(seqs):
            x[r, : len(seq) - 1] = torch.tensor(seq[:-1])
            start = max(k - 1, 0)  # the leading newlines are padding, not targets
            y[r, start : len(seq) - 1] = torch.tensor(seq[start + 1 :])
        return x, y

    return batch_fn


def constant_positions(body: str) -> set[int]:
    """Where a :mod:`gptlib.codebench` body holds a constant of its docstring: the digit in
    ``x > 5``, ``xs[:7]``, ``count(3)``, the letter in ``'a'`` (not the 2 and 0 of the fixed
    ``x % 2 == 0``)."""
    import re

    found = {m.start() for m in re.finditer(r"(?<=[ :(\[])\d|(?<=')[a-z](?=')", body)}
    for m in re.finditer(r"x % 2 == 0", body):  # "keep the even items": no constant
        found -= {m.start() + 4, m.start() + 9}
    return found


def constant_nll(model, tokenizer, problems: Sequence[HumanEvalProblem]) -> dict[str, float]:
    """Mean negative log-likelihood (nats per character) of the reference bodies given their
    prompts, split into the characters that copy a constant from the docstring (a digit, or
    a quoted letter) and all the others. A model that guesses the constants instead of
    copying them sits near log 9 = 2.2 nats on the first while the second is near zero."""
    from gptlib.evaluate import continuation_logprobs

    prefixes = [tokenizer.encode(to_code_symbols(p.prompt)) for p in problems]
    bodies = [to_code_symbols(p.canonical_solution) for p in problems]
    lp = continuation_logprobs(
        model, prefixes, [tokenizer.encode(b) for b in bodies], reduce="none"
    )
    sums = {"constant": [0.0, 0], "other": [0.0, 0]}
    for row, body in zip(lp.tolist(), bodies):
        constant = constant_positions(body)
        for i in range(len(body)):
            kind = "constant" if i in constant else "other"
            sums[kind][0] -= row[i]
            sums[kind][1] += 1
    return {kind: total / max(count, 1) for kind, (total, count) in sums.items()}


def completion_logprobs(
    model, tokenizer, samples: Sequence[tuple[str, str]], problems: Sequence[HumanEvalProblem]
) -> list[float]:
    """Mean log-probability per character of each sample's completion given its prompt.

    The Codex paper picks, among k samples, the one with the highest *mean* token
    log-probability (the sum would favour short programs); :func:`ranked_pass_at_1` scores
    that choice. Prompts are cut to fit the model's context, as in sampling."""
    from gptlib.evaluate import continuation_logprobs

    by_id = {p.task_id: p for p in problems}
    block = model.config.block_size
    prefixes, continuations = [], []
    for task_id, completion in samples:
        cont = tokenizer.encode(to_code_symbols(completion))[: block - 1] or tokenizer.encode("\n")
        prefix = tokenizer.encode(to_code_symbols(by_id[task_id].prompt))
        prefixes.append(prefix[-(block + 1 - len(cont)) :])
        continuations.append(cont)
    return continuation_logprobs(model, prefixes, continuations, reduce="mean").tolist()


def ranked_picks(results: Sequence[SampleResult], scores: Sequence[float]) -> dict[str, bool]:
    """Per problem: does its highest-scoring sample pass? (ties: the first one)."""
    best: dict[str, tuple[float, bool]] = {}
    for r, score in zip(results, scores):
        if r.task_id not in best or score > best[r.task_id][0]:
            best[r.task_id] = (score, r.passed)
    return {task: ok for task, (_, ok) in best.items()}


def ranked_pass_at_1(results: Sequence[SampleResult], scores: Sequence[float]) -> float:
    """Share of problems whose highest-scoring sample passes (ties: the first one)."""
    picks = ranked_picks(results, scores)
    return sum(picks.values()) / len(picks)


def passk_by_temperature(
    model,
    tokenizer,
    problems: Sequence[HumanEvalProblem],
    n: int,
    temperatures: Sequence[float],
    *,
    ks: Sequence[int] = (1, 10, 100),
    max_new_tokens: int = 120,
    rank_at: Sequence[float] = (),
    seed: int = 0,
    programs_per_process: int = 1,
    progress: bool = False,
    only: Sequence[float] | None = None,
) -> dict[str, dict]:
    """Sample ``n`` completions per problem at each temperature, judge them, and report
    ``{str(T): {"counts": {task: [n, c]}, "pass@k": {k: value}, "ranked@1": ...}}``.

    At the temperatures in ``rank_at`` it also scores picking one sample per problem by the
    highest mean log-probability (``ranked@1``), next to a random pick (``pass@1``), and keeps
    each problem's pick (``"ranked": {task: passed}``) for paired intervals.

    The i-th temperature samples with seed ``seed + i``; ``only`` computes just those
    temperatures (the same rows a call without it gives them: how a recipe adds temperatures
    to a stored measurement).
    """
    out: dict[str, dict] = {}
    for i, temperature in enumerate(temperatures):
        if only is not None and temperature not in only:
            continue
        samples = sample_completions(
            model,
            tokenizer,
            problems,
            n,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed + i,
            progress=progress,
        )
        results = evaluate_completions(
            problems, samples, progress=progress, programs_per_process=programs_per_process
        )
        counts = counts_by_task([(r.task_id, r.passed) for r in results])
        row = {
            "counts": {t: list(nc) for t, nc in counts.items()},
            "pass@k": {
                str(k): v for k, v in pass_at_k_table(results, [k for k in ks if k <= n]).items()
            },
        }
        if temperature in rank_at:
            scores = completion_logprobs(model, tokenizer, samples, problems)
            picks = ranked_picks(results, scores)
            row["ranked"] = picks
            row["ranked@1"] = sum(picks.values()) / len(picks)
        out[str(temperature)] = row
    return out
