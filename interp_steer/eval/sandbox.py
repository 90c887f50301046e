"""Run model-written Python in a sandbox: the one path by which this project executes it.

The sandbox is bubblewrap (``bwrap``) with kernel resource limits, not Python-level guards:
- filesystem: a read-only view of the system folders (``/usr``, ``/etc``, ``/lib*``, ``/bin``,
  the interpreter's own prefix) and one fresh writable folder, ``/sandbox``; ``$HOME``, the
  project and every other path are absent;
- its own user, PID, IPC, UTS, cgroup and network namespaces (only a loopback of its own);
- all capabilities dropped, ``uid`` 65534 inside the namespace; when the caller is root, the
  sandbox also runs as uid 65534 *outside* it, so the process limit is enforced by the kernel;
- ``setrlimit`` limits on CPU time, address space, file size, processes and open files, a wall
  clock, and output read up to a cap;
- on timeout, or when the calling thread dies, the whole process tree is killed (bwrap is PID 1
  of the sandbox's namespace, and dies with its parent).
What it does not promise: total disk use in ``/sandbox`` is bounded only by file size × files;
CPU and memory are not shared fairly with other sandboxes; kernel exploits are out of scope.

A second, weaker layer (``guard=True``) disables destructive functions (``os.system``,
``shutil.rmtree``, ``subprocess``, ``os.fork``, …) in-process before the candidate runs, as
HumanEval does; it is never relied on alone.

A test passes only when the harness prints a random sentinel after the test code finished, so
``sys.exit(0)`` or ``os._exit(0)`` before the asserts is a failure.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "ALLOW_ENV",
    "Limits",
    "Result",
    "SandboxUnavailable",
    "available",
    "run_code",
    "run_tests",
]

ALLOW_ENV = "INTERP_STEER_ALLOW_UNSANDBOXED"
NOBODY = 65534
_SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(RuntimeError):
    """No working sandbox on this machine, and unsandboxed execution was not allowed."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run.

    Args:
        wall_s: wall-clock seconds before the whole process tree is killed.
        cpu_s: CPU seconds (``RLIMIT_CPU``).
        memory_bytes: address space per process (``RLIMIT_AS``).
        file_bytes: largest file a process may write (``RLIMIT_FSIZE``).
        processes: processes of the sandbox's uid (``RLIMIT_NPROC``).
        open_files: open file descriptors per process (``RLIMIT_NOFILE``).
        output_bytes: bytes of stdout and of stderr read back; the rest is dropped.
    """

    wall_s: float = 5.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 64 << 20
    processes: int = 64
    open_files: int = 64
    output_bytes: int = 64 << 10

    def __post_init__(self):
        for name in ("wall_s", "cpu_s", "memory_bytes", "file_bytes", "processes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)!r}")
        if self.open_files < 16:
            raise ValueError(f"Limits.open_files must be >= 16, got {self.open_files!r}")
        if self.output_bytes < 0:
            raise ValueError(f"Limits.output_bytes must be >= 0, got {self.output_bytes!r}")


@dataclass(frozen=True)
class Result:
    """What a sandboxed run did.

    ``passed`` is only meaningful for `run_tests`: the sentinel was printed after the tests ran.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    sandboxed: bool
    passed: bool = False


_GUARD = r"""
def _interp_steer_guard():
    import builtins, os, shutil, subprocess
    def _blocked(name):
        def f(*a, **k):
            raise PermissionError(f"{name} is disabled in the interp_steer sandbox")
        return f
    for mod, names in (
        (os, ("system", "popen", "fork", "forkpty", "kill", "killpg", "remove", "unlink",
              "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
              "chown", "putenv", "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve",
              "spawnvp", "spawnvpe", "setuid", "setgid")),
        (shutil, ("rmtree", "move", "chown")),
        (subprocess, ("Popen", "run", "call", "check_call", "check_output", "getoutput",
                      "getstatusoutput")),
    ):
        for n in names:
            if hasattr(mod, n):
                setattr(mod, n, _blocked(f"{mod.__name__}.{n}"))
    builtins.exit = builtins.quit = _blocked("exit")
_interp_steer_guard()
del _interp_steer_guard
"""

# The harness reads the sentinel from stdin before any candidate code runs, so the sentinel
# is in no file the candidate can read; it prints it only after the test code finished.
_HARNESS = r"""
import sys
def _main():
    sentinel = sys.stdin.readline().strip()
    sys.stdin = open("/dev/null")
    ns = {"__name__": "__main__"}
    for part in sys.argv[1:]:
        with open(part) as f:
            src = f.read()
        exec(compile(src, part, "exec"), ns)
    sys.stdout.flush()
    if sentinel:
        sys.__stdout__.write("\n" + sentinel + "\n")
        sys.__stdout__.flush()
_main()
"""


def _world_reachable(path: str) -> bool:
    """Every folder above ``path`` is searchable and the file readable by any user."""
    p = Path(path).resolve()
    try:
        if not p.stat().st_mode & stat.S_IROTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


def _switch_uid() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@cache
def _interpreter() -> tuple[str, str]:
    """(interpreter, prefix) the sandbox's user can read: this Python's base, else python3."""
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    candidates = [(base, sys.base_prefix)]
    system = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
    if system:
        system = os.path.realpath(system)
        candidates.append((system, str(Path(system).parent.parent)))
    for exe, prefix in candidates:
        if not _switch_uid() or _world_reachable(exe):
            return exe, prefix
    raise SandboxUnavailable(
        f"no Python interpreter readable by uid {NOBODY} (tried {[c[0] for c in candidates]}); "
        "install Debian's python3, or run as a non-root user"
    )


def _bwrap_argv(workdir: str) -> list[str]:
    exe, prefix = _interpreter()
    argv = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
    ]
    argv += ["--new-session", "--cap-drop", "ALL", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    if not any(prefix == d or prefix.startswith(d + "/") for d in _SYSTEM_DIRS):
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--bind", workdir, "/sandbox", "--chdir", "/sandbox"]
    return argv + ["--", exe]


@cache
def _probe() -> str | None:
    """None when bwrap runs a trivial sandbox here, else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        r = _launch("pass", None, Limits(wall_s=20), sandboxed=True, guard=False)
    except SandboxUnavailable as e:
        return str(e)
    if r.returncode != 0:
        return f"bwrap failed here (exit {r.returncode}): {r.stderr.strip()[-300:]}"
    return None


def available() -> bool:
    """True when a working bubblewrap sandbox can run here."""
    return _probe() is None


def _allowed(allow_unsandboxed: bool | None) -> bool:
    if allow_unsandboxed is not None:
        return allow_unsandboxed
    return os.environ.get(ALLOW_ENV, "") not in ("", "0", "false", "False")


def _preexec(limits: Limits, nproc: int):
    def f():
        for res, val in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_FSIZE, limits.file_bytes),
            (resource.RLIMIT_NPROC, nproc),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(res, (val, val))
        # after any uid change, which clears it: SIGKILL this tree when the caller's thread dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return f


def _own_processes() -> int:
    uid = os.getuid()
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                n += d.stat().st_uid == uid
            except OSError:
                pass
    return n


def _read_capped(path: str, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", "replace")


def _launch(
    code: str, sentinel: str | None, limits: Limits, *, sandboxed: bool, guard: bool, test=""
) -> Result:
    root = _switch_uid() and sandboxed
    # the sandbox user's processes; without a uid switch the caller's own count is the base
    nproc = limits.processes + (0 if root else _own_processes())
    base = tempfile.mkdtemp(prefix="interp_steer_sandbox_")
    try:
        work = os.path.join(base, "work")
        os.mkdir(work)
        files = {"harness.py": _HARNESS, "candidate.py": (_GUARD if guard else "") + code}
        if test:
            files["test.py"] = test
        for name, text in files.items():
            with open(os.path.join(work, name), "w") as f:
                f.write(text)
        if root:
            os.chmod(base, 0o711)
            for p in [work, *(os.path.join(work, n) for n in files)]:
                os.chown(p, NOBODY, NOBODY)
        parts = ["candidate.py"] + (["test.py"] if test else [])
        if sandboxed:
            argv = _bwrap_argv(work) + ["-I", "-B", "harness.py", *parts]
            cwd = base
        else:
            argv = [sys.executable, "-I", "-B", "harness.py", *parts]
            cwd = work
        env = {"PATH": "/usr/bin:/bin", "HOME": "/sandbox" if sandboxed else work}
        env["LANG"] = "C.UTF-8"
        out, err = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            kw = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if root else {}
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=fo,
                stderr=fe,
                start_new_session=True,
                preexec_fn=_preexec(limits, nproc),
                **kw,
            )
            timed_out = False
            try:
                proc.communicate((sentinel or "").encode() + b"\n", timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_tree(proc)
        stdout = _read_capped(out, limits.output_bytes)
        stderr = _read_capped(err, limits.output_bytes)
    except PermissionError as e:
        raise SandboxUnavailable(f"cannot prepare the sandbox folder: {e}") from e
    finally:
        shutil.rmtree(base, ignore_errors=True)
    passed = (
        sentinel is not None
        and not timed_out
        and proc.returncode == 0
        and stdout.rstrip("\n").rsplit("\n", 1)[-1] == sentinel
    )
    rc = None if timed_out else proc.returncode
    return Result(rc, stdout, stderr, timed_out, sandboxed, passed)


def _kill_tree(proc: subprocess.Popen) -> None:
    # bwrap (or the bare interpreter) leads its own process group; inside bwrap the candidate
    # is PID 1's child in its own PID namespace, so killing bwrap kills every descendant
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _mode(allow_unsandboxed: bool | None) -> bool:
    """True to run in bwrap, False to run bare (only when allowed); raise otherwise."""
    why = _probe()
    if why is None:
        return True
    if _allowed(allow_unsandboxed):
        return False
    raise SandboxUnavailable(
        f"refusing to run model-written code without a sandbox: {why}. Install bubblewrap "
        f"(`apt-get install bubblewrap`, or `make install`), or knowingly pass "
        f"allow_unsandboxed=True / set {ALLOW_ENV}=1 to run it as yourself with only "
        "resource limits."
    )


def run_code(
    code: str,
    limits: Limits = Limits(),
    *,
    guard: bool = True,
    allow_unsandboxed: bool | None = None,
) -> Result:
    """Run ``code`` with a fresh interpreter in the sandbox.

    Args:
        code: Python source, as the model wrote it.
        limits: resource limits.
        guard: also disable destructive functions in-process first (a second layer).
        allow_unsandboxed: run without bubblewrap when none works here (resource limits only).
            None reads ``INTERP_STEER_ALLOW_UNSANDBOXED``.

    Raises:
        SandboxUnavailable: no working bubblewrap, and unsandboxed execution not allowed.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    return _launch(code, None, limits, sandboxed=_mode(allow_unsandboxed), guard=guard)


def run_tests(
    code: str,
    test: str,
    limits: Limits = Limits(),
    *,
    guard: bool = True,
    allow_unsandboxed: bool | None = None,
) -> Result:
    """Run ``code`` then ``test`` in the sandbox; ``passed`` only if the test code finished.

    Args:
        code: the candidate, as the model wrote it.
        test: trusted test code (asserts) run after it in the same namespace.
        limits: as in `run_code`.
        guard: as in `run_code`.
        allow_unsandboxed: as in `run_code`.
    """
    for name, val in (("code", code), ("test", test)):
        if not isinstance(val, str):
            raise TypeError(f"{name} must be a str, got {type(val).__name__}")
    if not test.strip():
        raise ValueError("test is empty: a pass would mean nothing")
    sentinel = "INTERP_STEER_PASS_" + secrets.token_hex(16)
    return _launch(
        code, sentinel, limits, sandboxed=_mode(allow_unsandboxed), guard=guard, test=test
    )
