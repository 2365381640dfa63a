"""A verdict on untrusted code that the code cannot forge.

If the tests run in the same process as the program they judge, the program can reach
everything that decides the verdict: it can exit before the tests with a success status,
read the runner's secret and print it, replace ``assert``'s helpers or ``builtins``, or
return an object whose ``__eq__`` says ``True`` to anything (one such body passes most of
HumanEval under the reference harness). Optimise a model against such a judge and it will
learn these tricks: reward hacking (奖励投机) of unit tests.

So the judge is split in two:

- the **program** (prompt + completion) runs in a sandboxed process
  (:class:`ServedProcess`, the sandbox's runner in serve mode) that holds no tests and no secret;
- the **tests** run here, in the caller's process, which the program cannot reach. They
  call ``candidate(...)``, a stand-in that sends the arguments over a pipe and receives the
  value the real function returned, as data: ``None``, ``bool``, ``int``, ``float``,
  ``str``, ``bytes`` and ``list``/``tuple``/``dict``/``set``/``frozenset`` of them, checked
  by *exact* type. Anything else (an object, an ``int`` subclass with a rigged ``__eq__``)
  is a failure. What the tests compare are therefore plain values built here.

:func:`run_tests` judges one completion in a fresh process. :func:`run_tests_many`
judges many; with ``programs_per_process > 1`` it serves several programs of one problem
from one process (each in its own namespace) to score a model's samples in bulk, and
starts a fresh process after any program that changed state shared across them (builtins,
a trace hook, a thread) or crashed it.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gptlib.passk import HumanEvalProblem
from gptlib.sandbox import _ISOLATION, ExecutionResult, _cap, _check_args, _job, _kill_group, _popen

__all__ = [
    "run_tests",
    "run_tests_many",
    "CandidateFailed",
    "ServedProcess",
    "encode_plain",
    "decode_plain",
]

_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "S"}
_BUILD = {"l": list, "t": tuple, "s": set, "S": frozenset}


class CandidateFailed(Exception):
    """The candidate did not return a plain value: it raised, crashed, timed out or cheated.

    Not an ``AssertionError``, so test code cannot mistake it for an expected failure."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def encode_plain(value: Any, depth: int = 0) -> Any:
    """A plain value as JSON-able data (the tests' arguments travel this way)."""
    t = type(value)
    if depth > 50:
        raise ValueError("nested more than 50 levels deep")
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return ["i", hex(value)]
    if t is float:
        return ["f", repr(value)]
    if t in _TAGS:
        return [_TAGS[t], [encode_plain(x, depth + 1) for x in value]]
    if t is dict:
        return [
            "d",
            [[encode_plain(k, depth + 1), encode_plain(v, depth + 1)] for k, v in value.items()],
        ]
    if t is bytes:
        return ["b", value.hex()]
    raise TypeError(f"{t.__name__} is not a plain value")


def decode_plain(data: Any, depth: int = 0) -> Any:
    """Rebuild a plain value from untrusted data; anything malformed raises ``ValueError``.

    Every object it returns is built here from JSON's own types, so no method of the
    sandboxed program's objects can run in this process."""
    if depth > 50:
        raise ValueError("nested more than 50 levels deep")
    if data is None or type(data) in (bool, str):
        return data
    if type(data) is not list or len(data) != 2 or type(data[0]) is not str:
        raise ValueError(f"not an encoded plain value: {str(data)[:60]}")
    tag, payload = data
    if tag in ("i", "f", "b"):
        if type(payload) is not str or len(payload) > 10_000:
            raise ValueError(f"bad {tag!r} payload")
        return (
            int(payload, 16)
            if tag == "i"
            else float(payload)
            if tag == "f"
            else bytes.fromhex(payload)
        )
    if type(payload) is not list:
        raise ValueError(f"bad {tag!r} payload")
    if tag == "d":
        out = {}
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("bad dict item")
            out[decode_plain(pair[0], depth + 1)] = decode_plain(pair[1], depth + 1)
        return out
    if tag not in _BUILD:
        raise ValueError(f"unknown tag {tag!r}")
    return _BUILD[tag](decode_plain(x, depth + 1) for x in payload)


class ServedProcess:
    """A sandboxed process in serve mode: it runs programs and calls their functions on
    request, one JSON line each way over two pipes, and runs no tests (see
    :mod:`gptlib.verdict`, which speaks the protocol). Same limits and layers as
    :func:`execute`; ``cpu_s`` caps the CPU time of the whole process."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        cpu_s: float | None = None,
        memory_mb: int = 1024,
        max_output_bytes: int = 1 << 20,
        max_processes: int = 64,
        namespaces: bool = True,
        drop_privileges: bool = True,
    ) -> None:
        _check_args("", timeout)
        self.job, self.workdir, python = _job(
            "",
            timeout,
            memory_mb,
            max_output_bytes,
            max_processes,
            namespaces,
            drop_privileges,
            cpu_s,
        )
        self.cap = max_output_bytes
        self.capture = Path(tempfile.mkdtemp(prefix="gptlib-sandbox-out-"))
        req_r, self._req_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        self.job["serve"] = [req_r, resp_w, max_output_bytes]
        self.started = time.perf_counter()
        self._buffer = b""
        try:
            with open(self.capture / "out", "wb") as out, open(self.capture / "err", "wb") as err:
                self.proc = _popen(
                    python, self.job, self.workdir, out, err, pass_fds=(req_r, resp_w)
                )
        finally:
            os.close(req_r)
            os.close(resp_w)

    def request(self, message: dict, deadline: float) -> dict | None:
        """Send one request; the answer, or None if the process died or ``deadline``
        (a ``time.monotonic()`` value) passed first (then the process is killed)."""
        try:
            os.write(self._req_w, (json.dumps(message) + "\n").encode())
        except (BrokenPipeError, OSError):
            return None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._resp_r], [], [], left)[0]:
                self.kill()
                return None
            chunk = os.read(self._resp_r, 1 << 16)
            if not chunk or len(self._buffer) > self.cap + 100:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):
            return None
        return answer if isinstance(answer, dict) else None

    def kill(self) -> None:
        _kill_group(self.proc.pid)

    def close(self) -> tuple[str, str, tuple[str, ...]]:
        """Kill the process group, clean up; the program's stdout, stderr and isolation layers."""
        for fd in (self._req_w, self._resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.kill()
        self.proc.wait()
        try:
            stdout = (self.capture / "out").read_bytes()
            stderr = (self.capture / "err").read_bytes()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(self.capture, ignore_errors=True)
        isolation: tuple[str, ...] = ()
        if stderr.startswith(_ISOLATION):
            first, _, stderr = stderr.partition(b"\n")
            isolation = tuple(x for x in first[len(_ISOLATION) :].decode().split(",") if x)
        return _cap(stdout, self.cap), _cap(stderr, self.cap), isolation


class _Server:
    """One sandboxed process and the programs loaded into it."""

    def __init__(self, timeout: float, programs: int, limits: dict) -> None:
        self.process = ServedProcess(timeout=timeout, cpu_s=timeout * programs + 1, **limits)
        self.loaded = 0
        self.broken = False  # crashed, timed out or tainted: start a fresh one for the next program

    def ask(self, message: dict, deadline: float) -> Any:
        answer = self.process.request(message, deadline)
        if answer is None:
            self.broken = True
            if time.monotonic() >= deadline:
                raise CandidateFailed("timeout", "time limit reached; process group killed")
            raise CandidateFailed("error", "the program's process ended (it exited or was killed)")
        if answer.get("tainted") is not False:
            self.broken = True
        if "not_plain" in answer:
            raise CandidateFailed("failed", f"not a plain value: {str(answer['not_plain'])[:300]}")
        if "raised" in answer:
            raise CandidateFailed("error", f"the candidate raised {str(answer['raised'])[:300]}")
        try:
            return decode_plain(answer.get("ok"))
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise CandidateFailed(
                "failed", f"the candidate returned no plain value ({e})"
            ) from None


def _trusted_namespace(problem: HumanEvalProblem) -> dict:
    """The tests' namespace: the prompt's own helpers (trusted: the benchmark wrote them) and
    the test code. The prompt ends with a docstring, so it is a complete definition."""
    namespace: dict = {"__name__": "__verdict__"}
    try:
        exec(compile(problem.prompt, "<prompt>", "exec"), namespace)
    except SyntaxError:
        pass  # a prompt that is not valid alone: the tests then use only their own code
    exec(compile(problem.test, "<tests>", "exec"), namespace)
    return namespace


def _judge(
    server: _Server, problem: HumanEvalProblem, completion: str, timeout: float
) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    program_id = server.loaded
    server.loaded += 1
    try:
        server.ask(
            {
                "op": "load",
                "id": program_id,
                "program": problem.prompt + completion,
                "entry": problem.entry_point,
            },
            deadline,
        )
    except CandidateFailed as e:
        return e.status, e.args[0].replace("the candidate raised", "the program raised")

    def candidate(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("the verdict passes positional arguments only")
        try:
            payload = encode_plain(list(args))
        except (TypeError, ValueError) as e:
            raise TypeError(f"a test passed an argument that is not a plain value ({e})") from None
        return server.ask({"op": "call", "id": program_id, "args": payload}, deadline)

    namespace = _trusted_namespace(problem)
    namespace[problem.entry_point] = candidate  # some tests call the function by its name
    try:
        namespace["check"](candidate)
    except CandidateFailed as e:
        return e.status, str(e)
    except AssertionError as e:
        return "failed", f"AssertionError: {e}"[:300] if str(e) else "AssertionError"
    except Exception as e:  # e.g. the test compares a returned None with a number
        return "failed", f"{type(e).__name__}: {e}"[:300]
    return "passed", ""


def run_tests_many(
    problems: Sequence[HumanEvalProblem],
    completions: Sequence[str],
    *,
    timeout: float = 5.0,
    workers: int | None = None,
    programs_per_process: int = 1,
    progress: bool = False,
    **limits: Any,
) -> list[ExecutionResult]:
    """Judge ``completions[i]`` against ``problems[i]``'s tests, in order.

    ``timeout`` is per program (loading it and every call its tests make). Consecutive
    pairs with the same problem share a process, up to ``programs_per_process`` of them.
    """
    import os

    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions.")
    if programs_per_process < 1:
        raise ValueError(f"programs_per_process must be >= 1, got {programs_per_process}.")
    groups: list[list[int]] = []
    for i, p in enumerate(problems):
        if (
            groups
            and problems[groups[-1][0]].task_id == p.task_id
            and len(groups[-1]) < programs_per_process
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    results: list[ExecutionResult | None] = [None] * len(problems)

    def run_group(group: list[int]) -> None:
        server = None
        for i in group:
            if server is None or server.broken:
                if server is not None:
                    server.process.close()
                server = _Server(timeout, len(group), limits)
            start = time.perf_counter()
            status, message = _judge(server, problems[i], completions[i], timeout)
            results[i] = ExecutionResult(
                status, message, "", "", None, time.perf_counter() - start, ()
            )
        stdout, stderr, isolation = server.process.close()
        for i in group:  # output belongs to the group's process; keep it on its last result
            r = results[i]
            results[i] = ExecutionResult(
                r.status,
                r.message,
                stdout if i == group[-1] else "",
                stderr if i == group[-1] else "",
                r.returncode,
                r.wall_s,
                isolation,
            )

    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(
            tqdm(
                pool.map(run_group, groups),
                total=len(groups),
                desc="judging",
                disable=not progress,
                leave=False,
            )
        )
    return results  # type: ignore[return-value]


def run_tests(
    problem: HumanEvalProblem, completion: str, timeout: float = 5.0, **limits: Any
) -> ExecutionResult:
    """Judge one completion in a fresh sandboxed process; ``status`` is ``passed`` only if
    every test passed on the plain values the candidate returned."""
    if not isinstance(completion, str):
        raise TypeError(f"the completion must be a str, got {type(completion).__name__}.")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be positive (seconds), got {timeout}.")
    return run_tests_many([problem], [completion], timeout=timeout, workers=1, **limits)[0]


Judge = Callable[[HumanEvalProblem, str], ExecutionResult]
