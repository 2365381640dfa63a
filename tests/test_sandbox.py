"""The sandbox against programs that try to hurt the host or fake a pass.

Every case must end as a failure (never ``passed``) within its limit and leave the host as
it was: no file written or deleted outside the sandbox, no process left running, no
connection made, no temporary directory left behind. A control case shows that an honest
program does pass, so these tests cannot succeed merely because everything fails.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from gptlib.sandbox import execute, execute_many

TIMEOUT = 2.0
SLACK = 3.0  # seconds allowed beyond the timeout (process start-up, a loaded CI machine)


def run(source: str, **kwargs):
    timeout = kwargs.pop("timeout", TIMEOUT)
    start = time.perf_counter()
    result = execute(textwrap.dedent(source), timeout=timeout, **kwargs)
    assert time.perf_counter() - start < timeout + SLACK, f"took too long: {result}"
    return result


def processes_inside(base: Path) -> list[str]:
    """Live processes whose working directory is under ``base`` (every sandboxed program's is).

    Looking at working directories, not user ids, keeps this test independent of other
    sandboxes running at the same time (another pytest worker, a chapter)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(base)) and state != "Z":  # zombies are already dead
            found.append(f"{proc.name}: {cmdline[:80]}")
    return found


LAYERS = execute("pass", timeout=10).isolation  # which kernel layers this machine gives us


@pytest.fixture(autouse=True)
def host_is_left_unchanged(monkeypatch):
    """Each test's sandboxes live under a fresh folder; afterwards it must be empty and no
    process may still be running in it."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    base.chmod(0o755)  # `nobody` must be able to reach its working directory
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    try:
        yield
        deadline = time.monotonic() + 2.0  # a SIGKILLed process may take a moment to be torn down
        while processes_inside(base) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not processes_inside(base), f"processes survived the sandbox: {processes_inside(base)}"
        left = list(base.glob("gptlib-sandbox-*"))
        assert not left, f"the sandbox left temporary folders behind: {left}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_honest_program_passes_and_its_output_is_captured():
    result = run("""
        def add(a, b):
            return a + b
        assert add(2, 3) == 5
        print("hello from the sandbox")
    """)
    assert result.status == "passed" and result.passed, result
    assert result.stdout.strip() == "hello from the sandbox"


def test_a_failing_assert_is_a_failure_with_the_reason():
    result = run("assert sorted([3, 1, 2]) == [3, 2, 1], 'not sorted descending'")
    assert result.status == "failed"
    assert "not sorted descending" in result.message


def test_an_exception_is_an_error_naming_it():
    result = run("1 / 0")
    assert result.status == "error" and "ZeroDivisionError" in result.message


def test_infinite_loop_times_out():
    result = run("while True:\n    pass")
    assert result.status == "timeout"
    assert TIMEOUT <= result.wall_s < TIMEOUT + SLACK


def test_infinite_loop_in_a_thread_that_blocks_exit_times_out():
    result = run("""
        import threading
        threading.Thread(target=lambda: [None for _ in iter(int, 1)]).start()
    """)
    assert result.status == "timeout"


@pytest.mark.parametrize("bomb", [
    "import os\nwhile True:\n    os.fork()",
    "import posix\nwhile True:\n    posix.fork()",
    "import multiprocessing\nwhile True:\n    multiprocessing.Process(target=print).start()",
], ids=["os.fork", "posix.fork", "multiprocessing"])
def test_fork_bomb_is_stopped(bomb):
    result = run(bomb)
    assert not result.passed
    assert result.status == "error", result


@pytest.mark.skipif(os.geteuid() == 0 and "nobody" not in LAYERS,
                    reason="as root without the drop to `nobody`, the kernel does not cap processes")
def test_fork_bomb_that_bypasses_the_python_guard_hits_the_process_limit():
    # Python-level guards can be undone; the kernel's RLIMIT_NPROC cannot.
    result = run("""
        import sys
        for name in ('subprocess', '_posixsubprocess', 'selectors', 'signal'):
            sys.modules.pop(name, None)
        import subprocess
        children = []
        while True:
            children.append(subprocess.Popen(['sleep', '30']))
    """)
    assert result.status == "error", result
    assert "BlockingIOError" in result.message or "Resource temporarily unavailable" in result.message, result


def test_memory_bomb_hits_the_memory_limit():
    result = run("""
        hoard = []
        while True:
            hoard.append(bytearray(50 * 2**20))
    """, memory_mb=512, timeout=5.0)
    assert result.status == "error" and "MemoryError" in result.message, result


def test_huge_output_is_capped():
    result = run("while True:\n    print('x' * 10_000)", max_output_bytes=100_000)
    assert not result.passed
    assert result.status in ("error", "timeout")
    assert len(result.stdout) <= 100_000 + 100


def test_files_outside_the_sandbox_cannot_be_written_or_deleted(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    for attack in (f"open({str(victim)!r}, 'w').write('pwned')",
                   f"import os\nos.remove({str(victim)!r})",
                   f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                   f"from pathlib import Path\nPath({str(victim)!r}).write_text('pwned')",
                   f"import os\nos.rename({str(victim)!r}, 'stolen.txt')"):
        result = run(attack)
        assert not result.passed, attack
        assert victim.read_text() == "keep me", attack


def test_the_program_may_use_its_own_working_directory():
    result = run("""
        import os
        with open('scratch.txt', 'w') as f:
            f.write('temporary')
        assert open('scratch.txt').read() == 'temporary'
        os.remove('scratch.txt')
    """)
    assert result.passed, result


@pytest.mark.parametrize("attack", [
    "import os\nos.system('echo pwned > /tmp/gptlib-sandbox-pwned')",
    "import subprocess\nsubprocess.run(['echo', 'pwned'])",
    "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo pwned'])",
    "import os\nos.popen('echo pwned').read()",
], ids=["os.system", "subprocess", "os.execv", "os.popen"])
def test_shell_and_subprocesses_are_refused(attack):
    result = run(attack)
    assert not result.passed and result.status == "error", result
    assert "pwned" not in result.stdout
    assert not Path("/tmp/gptlib-sandbox-pwned").exists()


@pytest.mark.skipif("pidns" not in LAYERS, reason="no PID namespace on this machine")
def test_a_process_that_escapes_the_process_group_dies_with_the_sandbox():
    # A new session escapes a process-group kill; it cannot escape the PID namespace.
    result = run("""
        import sys
        for name in ('subprocess', '_posixsubprocess', 'selectors', 'signal'):
            sys.modules.pop(name, None)
        import subprocess
        subprocess.Popen(['sleep', '60'], start_new_session=True)
        while True:
            pass
    """)
    assert result.status == "timeout", result  # the fixture then checks that `sleep` is gone


@pytest.mark.skipif("netns" not in LAYERS, reason="no network namespace on this machine")
def test_no_network_even_when_the_socket_guard_is_bypassed():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        plain = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}))")
        assert plain.status == "error"
        bypass = run(f"""
            import sys
            for name in ('socket', '_socket'):
                sys.modules.pop(name, None)
            import socket
            socket.create_connection(('127.0.0.1', {port}), timeout=1)
            print('connected')
        """)
        assert not bypass.passed
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


def test_the_parents_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("GPTLIB_CANARY", "s3cret")
    result = run("import os\nassert os.environ.get('GPTLIB_CANARY') == 's3cret', sorted(os.environ)")
    assert result.status == "failed"
    proc = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert not proc.passed and "s3cret" not in proc.stdout


@pytest.mark.parametrize("cheat", [
    "import sys\nsys.exit(0)\nassert False",
    "raise SystemExit(0)\nassert False",
    "import os\nos._exit(0)\nassert False",
    "print('SANDBOX-OK-' + '0' * 32)\nimport os\nos._exit(0)",
], ids=["sys.exit(0)", "SystemExit", "os._exit(0)", "forged-marker"])
def test_exiting_early_is_not_a_pass(cheat):
    result = run(cheat)
    assert result.status == "failed", result


def test_patching_builtins_to_fake_a_pass_is_caught():
    result = run("""
        import builtins
        builtins.abs = lambda x: 0          # every tolerance check now succeeds
        def candidate(x):
            return x + 1                     # wrong
        assert abs(candidate(1) - 3) < 1e-9
    """)
    assert result.status == "failed" and "builtins" in result.message, result


def test_a_destructor_that_never_returns_times_out():
    result = run("""
        class Stubborn:
            def __del__(self):
                while True:
                    pass
        keep = Stubborn()
        assert True
    """)
    assert result.status == "timeout", result


def test_execute_many_keeps_order_and_runs_in_parallel():
    programs = ["import time\ntime.sleep(0.5)\nassert %d" % (i % 2) for i in range(4)]
    start = time.perf_counter()
    results = execute_many(programs, timeout=5, workers=4, progress=False)
    assert [r.status for r in results] == ["failed", "passed", "failed", "passed"]
    assert time.perf_counter() - start < 4 * 0.5 + SLACK - 1


def test_bad_arguments_get_clear_errors():
    with pytest.raises(TypeError, match="source as a str"):
        execute(b"print(1)")
    with pytest.raises(ValueError, match="timeout must be positive"):
        execute("print(1)", timeout=0)


@pytest.mark.skipif("nobody" not in LAYERS, reason="only sandboxes that share the user `nobody` can interfere")
def test_a_fork_bomb_does_not_stop_other_sandboxes():
    # All sandboxes run as `nobody` and share its process limit; while one bomb holds that
    # limit, honest programs next to it must still start and pass.
    bomb = textwrap.dedent("""
        import sys
        for name in ('subprocess', '_posixsubprocess', 'selectors', 'signal'):
            sys.modules.pop(name, None)
        import subprocess, time
        children = []
        try:
            while True:
                children.append(subprocess.Popen(['sleep', '30']))
        except OSError:
            time.sleep(3)  # hold the limit while the others run
            raise
    """)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        bombing = pool.submit(execute, bomb, timeout=6)
        time.sleep(1.5)  # let it reach the limit
        honest = execute_many(["assert sum(range(4)) == 6"] * 4, timeout=4, workers=4, progress=False)
        assert not bombing.result().passed
    assert [r.status for r in honest] == ["passed"] * 4, honest
