"""The bubblewrap sandbox: every escape attempt is contained, scored 0, and leaves nothing running.

Each attack is written so that, were it to succeed, the program would go on to define a correct
``add`` and score 1.0; containment is what makes it score 0.
"""
import os
import pathlib
import secrets
import shutil
import socket
import time

import pytest

from r1jax.rewards import code, sandbox

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap missing: apt-get install -y bubblewrap (.ci/run does)")

ADD_TASK = code.CodeTask(code.parse_tests([{"call": "candidate(2, 3)", "expected": "5"},
                                           {"call": "candidate(-1, 1)", "expected": "0"}]),
                         entry_point="add")
ADD = "\ndef add(a, b):\n    return a + b\n"
TIMEOUT_S = 2.0


def _mode_available(mode: str) -> bool:
    try:
        sandbox.resolve_mode(sandbox.SandboxConfig(mode=mode))
        return True
    except sandbox.SandboxUnavailable:
        return False


@pytest.fixture(params=["userns", "privileged"])
def config(request):
    """Every test runs in both launch modes where this host supports them (privileged needs root)."""
    if shutil.which("bwrap") is None or not _mode_available(request.param):
        pytest.skip(f"sandbox mode {request.param!r} unavailable on this host")
    return sandbox.SandboxConfig(mode=request.param)


def _score(program: str, config: sandbox.SandboxConfig) -> float | None:
    return code.code_accuracy(f"<think>t</think><answer>```python\n{program}```</answer>", ADD_TASK,
                              timeout_s=TIMEOUT_S, config=config)


def _live(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line holds ``marker``."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state not in (b"Z", b"X"):
            pids.append(int(entry.name))
    return pids


def _assert_nothing_left(marker: str = "") -> None:
    assert _live("/sandbox/main.py") == []  # every sandboxed interpreter boots with this path
    if marker:
        assert _live(marker) == []


def _spawn(body: str, marker: str) -> str:
    """Code that replaces the current process by a fresh interpreter running ``body``, tagged with
    ``marker`` in its argv so the test can look for it afterwards."""
    return f"os.execv('/usr/bin/python3', ['python3', '-c', {body!r}, {marker!r}])"


def test_runs_a_program(config):
    result = sandbox.run_python("import sys\nprint(sys.stdin.read().upper())\nsys.exit(3)", stdin="hi",
                                config=config)
    assert result.stdout == "HI\n" and result.exit_code == 3
    assert not result.timed_out and result.infra_error is None and not result.ok
    assert _score(ADD, config) == 1.0
    _assert_nothing_left()


def test_correct_program_after_failed_import_still_judged_by_outputs(config):
    assert _score("def add(a, b):\n    return a - b\n", config) == 0.0


def test_infinite_loop(config):
    marker = secrets.token_hex(8)
    assert _score("import os\n" + _spawn("while True: pass", marker) + ADD, config) == 0.0
    _assert_nothing_left(marker)
    result = sandbox.run_python("while True: pass", timeout_s=TIMEOUT_S, config=config)
    assert result.exit_code is None or result.exit_code != 0  # killed by the CPU limit or the clock


def test_sleep_past_the_timeout(config):
    marker = secrets.token_hex(8)
    assert _score("import os\n" + _spawn("import time; time.sleep(600)", marker) + ADD, config) == 0.0
    _assert_nothing_left(marker)
    result = sandbox.run_python("import time\ntime.sleep(600)", timeout_s=1.0, config=config)
    assert result.timed_out and result.exit_code is None and result.infra_error is None


def test_fork_bomb(config):
    marker = secrets.token_hex(8)
    bomb = ("import os\nwhile True:\n    if os.fork() == 0:\n        "
            + _spawn("import os\nwhile True: os.fork()", marker) + "\n")
    assert _score(bomb + ADD, config) == 0.0
    _assert_nothing_left(marker)
    result = sandbox.run_python("import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                                "            import time; time.sleep(600)\n        n += 1\n"
                                "except OSError:\n    print(n)\n", timeout_s=TIMEOUT_S, config=config)
    assert 0 < int(result.stdout) < sandbox.SandboxLimits().max_processes
    _assert_nothing_left()


def test_multi_gib_allocation(config):
    assert _score("block = bytearray(4 << 30)\nblock[-1] = 1\n" + ADD, config) == 0.0
    result = sandbox.run_python("block = bytearray(4 << 30)", config=config)
    assert "MemoryError" in result.stderr and result.exit_code != 0
    _assert_nothing_left()


def test_connecting_to_a_host_listener(config):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        attack = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n"
        assert _score(attack + ADD, config) == 0.0
        with pytest.raises(socket.timeout):
            listener.accept()
    _assert_nothing_left()


def test_writing_outside_the_sandbox(tmp_path, config):
    targets = [tmp_path / "pwned", pathlib.Path(__file__).with_name(f"pwned-{secrets.token_hex(6)}"),
               pathlib.Path("/usr/bin") / f"pwned-{secrets.token_hex(6)}"]
    for target in targets:
        assert _score(f"open({str(target)!r}, 'w').write('x')\n" + ADD, config) == 0.0
        assert not target.exists()
    assert _score("open('/sandbox/solution.py', 'a').write('x')\n" + ADD, config) == 0.0
    # The sandbox's /tmp is its own: writing there works, and nothing reaches the host's /tmp.
    host_tmp = pathlib.Path("/tmp") / f"pwned-{secrets.token_hex(6)}"
    assert _score(f"open({str(host_tmp)!r}, 'w').write('x')\n" + ADD, config) == 1.0
    assert not host_tmp.exists()
    _assert_nothing_left()


def test_reading_the_parents_environment(monkeypatch, config):
    secret = secrets.token_hex(16)
    monkeypatch.setenv("R1JAX_TEST_SECRET", secret)
    attack = (
        "import os, glob\n"
        f"found = {secret!r} in repr(dict(os.environ))\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        f"        found |= {secret!r}.encode() in open(path, 'rb').read()\n"
        "    except OSError:\n"
        "        pass\n"
        "print(dict(os.environ))\n"
        "assert found, 'secret not visible'\n")
    assert _score(attack + ADD, config) == 0.0
    result = sandbox.run_python(attack, config=config)
    assert secret not in result.stdout + result.stderr
    assert "R1JAX_TEST_SECRET" not in result.stdout
    _assert_nothing_left()


def test_double_forked_daemon(config):
    marker = secrets.token_hex(8)
    daemon = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        "
              + _spawn("import time; time.sleep(600)", marker) + "\n    os._exit(0)\n"
              "os.wait()\nos._exit(0)\n")
    assert _score(daemon + ADD, config) == 0.0
    _assert_nothing_left(marker)
    # Even a daemon started by a program that then finishes normally is gone when the run returns.
    result = sandbox.run_python(daemon.replace("os.wait()\nos._exit(0)\n", "os.wait()\nprint('bye')\n"),
                                config=config)
    assert result.stdout == "bye\n" and result.exit_code == 0
    _assert_nothing_left(marker)


def test_exit_zero_before_the_asserts(config):
    result = sandbox.run_python("import os\nos._exit(0)\n", config=config)
    assert result.exit_code == 0 and result.ok  # exit status alone would call this a pass
    assert _score("import os\nos._exit(0)\n" + ADD, config) == 0.0
    assert _score(ADD + "import sys\nsys.exit(0)\n", config) == 0.0
    _assert_nothing_left()


def test_always_equal_result_and_forged_reports(config):
    always_equal = ("class Anything:\n    def __eq__(self, other):\n        return True\n"
                    "    def __repr__(self):\n        return '5'\n"
                    "def add(a, b):\n    return Anything()\n")
    assert _score(always_equal, config) == 0.0
    forged = "print('ok 0 5')\nprint('\\n0 [0, \"ok\", \"5\"]')\n" + "def add(a, b):\n    return None\n"
    assert _score(forged, config) == 0.0


def test_output_is_capped(config):
    limits = sandbox.SandboxLimits(max_output_bytes=1000)
    result = sandbox.run_python("print('x' * 100_000)", config=sandbox.SandboxConfig(limits=limits, mode=config.mode))
    assert result.output_truncated and len(result.stdout) == 1000


def test_missing_bubblewrap_refuses_with_install_hint():
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install -y bubblewrap"):
        sandbox.run_python("print(1)", config=sandbox.SandboxConfig(bwrap="/nonexistent/bwrap"))


def test_infrastructure_error_is_not_a_wrong_answer(monkeypatch, config):
    # An interpreter that does not exist inside the sandbox: bwrap runs, the program never starts.
    broken = sandbox.SandboxConfig(python="/usr/bin/python3-not-there", mode=config.mode)
    result = sandbox._run("print(1)", "", TIMEOUT_S, {}, broken, config.mode)
    assert result.infra_error is not None and result.exit_code is None
    monkeypatch.setattr(sandbox, "run_python", lambda *a, **k: result)
    assert _score(ADD, config) is None


def test_killed_caller_takes_the_sandbox_down():
    # A reward worker SIGKILLed for its timeout mid-run must not orphan the sandbox it started.
    from r1jax.rewards import RewardPool

    with RewardPool(1, timeout_s=1.5) as pool:
        result = pool.map(sandbox.run_python, [("import time\ntime.sleep(600)",)])
    assert result.timeouts == 1
    deadline = time.monotonic() + 5
    while _live("/sandbox/main.py") and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel tears the namespace down asynchronously after bwrap dies
    _assert_nothing_left()
