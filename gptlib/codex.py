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
    "ranked_pass_at_1",
    "code_tokenizer",
    "to_code_symbols",
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


def ranked_pass_at_1(results: Sequence[SampleResult], scores: Sequence[float]) -> float:
    """Share of problems whose highest-scoring sample passes (ties: the first one)."""
    best: dict[str, tuple[float, bool]] = {}
    for r, score in zip(results, scores):
        if r.task_id not in best or score > best[r.task_id][0]:
            best[r.task_id] = (score, r.passed)
    return sum(ok for _, ok in best.values()) / len(best)


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
) -> dict[str, dict]:
    """Sample ``n`` completions per problem at each temperature, judge them, and report
    ``{str(T): {"counts": {task: [n, c]}, "pass@k": {k: value}, "ranked@1": ...}}``.

    At the temperatures in ``rank_at`` it also scores picking one sample per problem by the
    highest mean log-probability (``ranked@1``), next to a random pick (``pass@1``).
    """
    out: dict[str, dict] = {}
    for i, temperature in enumerate(temperatures):
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
            row["ranked@1"] = ranked_pass_at_1(results, scores)
        out[str(temperature)] = row
    return out
