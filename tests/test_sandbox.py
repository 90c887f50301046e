"""The sandbox for model-written code: graded passes mean the tests ran; hostile code is contained.

The containment tests run with ``guard=False`` so that they test bubblewrap and the kernel
limits, not the in-process guard.
"""

import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from interp_steer.eval import metrics, sandbox
from interp_steer.eval.sandbox import Limits, SandboxUnavailable, run_code, run_tests

ROOT = Path(__file__).resolve().parents[1]
RAW = Limits(wall_s=10)


def _raw(code, limits=RAW):
    return run_code(code, limits, guard=False)


def test_bubblewrap_works_here():
    # every other test here needs it; `make install` installs it
    assert sandbox.available(), sandbox._probe()


def test_pass_needs_the_tests_to_finish():
    test = "assert add(2, 3) == 5"
    assert run_tests("def add(a, b):\n    return a + b", test).passed
    assert not run_tests("def add(a, b):\n    return a - b", test).passed
    for early in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit(0)"):
        r = run_tests("def add(a, b):\n    return 0\n" + early, test, guard=False)
        assert not r.passed, early
    # the candidate cannot print a pass: the sentinel is random and lives in no file
    r = run_tests("print(open('harness.py').read()); print(open('test.py').read())", "pass")
    assert r.passed and "INTERP_STEER_PASS_" not in r.stdout.rsplit("\n", 2)[0]
    # a test that exits early itself is not a pass either
    assert not run_tests("x = 1", "import os\nos._exit(0)").passed


def test_grade_code_and_early_exit():
    task = {"test": "assert add(2, 3) == 5"}
    answers = [
        "Sure!\n```python\ndef add(a, b):\n    return a + b\n```",
        "def add(a, b): return a - b",
        "while True: pass",
        "import sys\ndef add(a, b): return 0\nsys.exit(0)",
        "import os\ndef add(a, b): return 0\nos._exit(0)",
    ]
    assert metrics.grade_code(answers, [task] * 5, timeout=2).tolist() == [1, 0, 0, 0, 0]


SOLUTIONS = {
    "add": "def add(a, b):\n    return a + b",
    "is_even": "def is_even(n):\n    return n % 2 == 0",
    "square": "def square(x):\n    return x * x",
    "reverse_string": "def reverse_string(s):\n    return s[::-1]",
    "max_of_list": "def max_of_list(xs):\n    return max(xs)",
    "factorial": "import math\ndef factorial(n):\n    return math.factorial(n)",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)",
    "is_palindrome": "def is_palindrome(s):\n    return s == s[::-1]",
    "sum_list": "def sum_list(xs):\n    return sum(xs)",
    "fib": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "gcd": "import math\ndef gcd(a, b):\n    return math.gcd(a, b)",
    "celsius_to_fahrenheit": "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
}


def test_capability_solutions_pass_and_wrong_ones_fail():
    tasks = metrics.capability_tasks()["code"]
    by_name = {t["prompt"].split("function ")[1].split("(")[0]: t for t in tasks}
    assert set(by_name) == set(SOLUTIONS)
    names = sorted(by_name)
    good = [f"```python\n{SOLUTIONS[n]}\n```" for n in names]
    bad = [f"def {n}(*a):\n    return None" for n in names]
    items = [by_name[n] for n in names]
    assert metrics.grade_code(good, items).tolist() == [1.0] * len(names)
    assert metrics.grade_code(bad, items).tolist() == [0.0] * len(names)


def test_regrading_the_committed_window_answers_agrees_with_their_rates():
    """The window study's stored code answers (task 0, one per strength) regrade as recorded.

    Its JSON keeps rates, not per-sample passes, so the check is: an answer from a strength
    where every sample passed passes, one where none passed fails, and the exit-code rule the
    rates were graded with (run here inside the sandbox) agrees with the sentinel rule on all.
    """
    res = json.loads((ROOT / "figures" / "steering_window.json").read_text())["results"]
    task = metrics.capability_tasks()["code"][0]
    answers, rates = [], []
    for m in res["models"].values():
        for q in m["questions"].values():
            for read in q["reads"].values():
                if read.get("capability_measure") != "code":
                    continue
                answers += read["capability_examples"]
                rates += read["capability_rate"][1:]
    assert len(answers) == len(rates) >= 40
    # every second answer (a sandboxed process each; both kinds are among them)
    answers, rates = answers[::2], rates[::2]
    got = metrics.grade_code(answers, [task] * len(answers))
    rates = np.array(rates)
    assert (got[rates == 0] == 0).all() and (got[rates == 1] == 1).all()
    assert (rates == 0).sum() >= 10 and 0 < got.mean() < 1  # both kinds present
    # the two rules agree: checked on every second one of these
    some = list(range(0, len(answers), 2))
    exit_zero = [
        run_code(metrics.extract_code(answers[i]) + "\n\n" + task["test"]).returncode == 0
        for i in some
    ]
    assert 0 < np.mean(exit_zero) < 1
    assert got[some].tolist() == [float(x) for x in exit_zero]


def test_deleting_outside_is_contained(tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("precious")
    home = Path.home() / f"interp_steer_canary_{os.getpid()}"
    home.mkdir()
    try:
        for snippet in (
            f"import os; os.system('rm -rf {canary} {home}')",
            f"import shutil; shutil.rmtree({str(canary)!r}); shutil.rmtree({str(home)!r})",
            f"import subprocess; subprocess.run(['rm', '-rf', {str(canary)!r}, {str(home)!r}])",
            f"import os; os.system('rm -rf {ROOT}/README.md')",
        ):
            _raw(snippet)
            assert (canary / "keep.txt").read_text() == "precious", snippet
            assert home.is_dir(), snippet
            assert (ROOT / "README.md").is_file(), snippet
    finally:
        home.rmdir()


def test_home_and_project_are_invisible_and_unwritable():
    target = Path.home() / f"interp_steer_written_{os.getpid()}.txt"
    r = _raw(f"import os\nopen({str(target)!r}, 'w').write('x')\n")
    assert r.returncode != 0 and not target.exists()
    r = _raw(f"print(open({str(ROOT / 'README.md')!r}).read()[:20])")
    assert r.returncode != 0 and "FileNotFoundError" in r.stderr
    r = _raw("import os; print(os.getuid(), sorted(os.listdir('/')))")
    uid, listing = r.stdout.split(" ", 1)
    assert uid == str(sandbox.NOBODY) and "root" not in listing and "work" not in listing
    # the one writable place
    r = _raw("open('out.txt', 'w').write('ok'); print(open('out.txt').read())")
    assert r.returncode == 0 and r.stdout.strip() == "ok"
    r = _raw("open('/usr/interp_steer_x', 'w')")
    assert r.returncode != 0 and not Path("/usr/interp_steer_x").exists()


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def serve():
        deadline = time.time() + 8
        while time.time() < deadline:
            try:
                accepted.append(server.accept())
            except TimeoutError:
                pass

    t = threading.Thread(target=serve)
    t.start()
    r = _raw(
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'leak')\nprint('connected')"
    )
    t.join()
    server.close()
    assert "connected" not in r.stdout and r.returncode != 0
    assert not accepted
    # and no outside name resolution or routes at all
    r = _raw("import socket; socket.create_connection(('8.8.8.8', 53), timeout=2)")
    assert r.returncode != 0


def test_memory_file_and_process_limits():
    lim = Limits(wall_s=15, memory_bytes=512 << 20, file_bytes=8 << 20, processes=16)
    r = _raw("x = bytearray(2 << 30)\nprint('allocated')", lim)
    assert r.returncode != 0 and "allocated" not in r.stdout and "MemoryError" in r.stderr
    r = _raw(
        "f = open('big', 'wb')\nfor _ in range(32):\n    f.write(b'0' * (1 << 20))\n"
        "f.close()\nprint('written')",
        lim,
    )
    assert r.returncode != 0 and "written" not in r.stdout
    r = _raw(
        "import os, time\nn = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
        "        os._exit(0)\n    n += 1\nprint('forked', n)",
        lim,
    )
    n = int(r.stdout.split()[-1])
    assert 0 < n < 16


def test_timeout_kills_the_whole_tree():
    marker = f"interp_steer_orphan_{os.getpid()}"
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', "
        f"{marker!r}])\n"
        "time.sleep(60)\n"
    )
    t0 = time.time()
    r = _raw(code, Limits(wall_s=1.5))
    assert r.timed_out and r.returncode is None and time.time() - t0 < 10
    time.sleep(0.5)
    left = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    left.append(d.name)
            except OSError:
                pass
    assert not left


def test_output_is_capped():
    r = _raw("import sys\nsys.stdout.write('x' * 10_000_000)", Limits(output_bytes=1000))
    assert len(r.stdout) == 1000


def test_guard_is_a_second_layer():
    r = run_code("import os; os.system('true')")
    assert r.returncode != 0 and "disabled in the interp_steer sandbox" in r.stderr


def test_refuses_without_a_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: "bubblewrap (bwrap) is not installed")
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*INTERP_STEER_ALLOW_UNSANDBOXED"):
        metrics.run_python("def f(): pass", "f()")
    r = run_tests("def f(): return 1", "assert f() == 1", allow_unsandboxed=True)
    assert r.passed and not r.sandboxed
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    assert run_tests("def f(): return 1", "assert f() == 1").passed
    assert not run_tests("import sys\nsys.exit(0)", "assert False").passed


def test_bad_input():
    with pytest.raises(TypeError, match="code must be a str"):
        run_tests(None, "pass")
    with pytest.raises(ValueError, match="test is empty"):
        run_tests("x = 1", "  ")
    with pytest.raises(ValueError, match="Limits.wall_s"):
        Limits(wall_s=0)
