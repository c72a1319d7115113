"""Run untrusted Python under bubblewrap, with rlimits, a wall-clock timeout and reaping.

Model-written code is a security boundary, so nothing here trusts the program it runs:

* **Namespaces.** ``bwrap`` unshares pid, net, ipc, uts and cgroup namespaces (and the user
  namespace where the kernel allows it), so the program sees only its own processes, only a
  loopback device with nothing listening, and dies with its pid-1 when that exits.
* **Filesystem.** Only ``/usr`` (and the merged-usr ``/bin``, ``/lib`` links) is visible, read-only.
  ``/tmp`` and ``/dev/shm`` are private, size-capped tmpfs. The program and its data files are
  copied in from memory (``--ro-bind-data``), so no host path is shared with it.
* **User.** The program never runs as root: as root we hand it a fresh uid from a high range (one per
  run, so per-user limits and reaping cannot touch another run); otherwise it runs as the caller.
* **Environment.** bwrap is started with a three-variable environment and ``--clearenv``, so neither
  ``os.environ`` nor ``/proc/1/environ`` (bwrap itself) shows the trainer's variables.
* **Limits.** ``prlimit`` sets CPU seconds, address space, processes, file size, open files and
  core size inside the namespaces; a wall-clock timeout SIGKILLs bwrap's process group, and
  ``--die-with-parent`` takes the sandbox down with it (or with this process).
* **Reaping.** After every run, any process still living in the run's pid namespace is killed.

Two launch modes, chosen once per process by probing (``SandboxConfig.mode="auto"``):
``"userns"`` runs bwrap unprivileged inside a new user namespace (rlimits counted per sandbox);
``"privileged"`` (root only, for kernels that forbid unprivileged user namespaces) runs bwrap as
root and drops to the fresh uid with ``setpriv`` before the program starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import shutil
import subprocess
import threading
import time
from typing import Mapping

from r1jax.rewards import processes

INSTALL_HINT = (
    "bubblewrap (the `bwrap` binary) is required to run model-written code; install it with "
    "`apt-get install -y bubblewrap` (Debian/Ubuntu; .ci/run does this) or `dnf install bubblewrap`"
)
# The program sees exactly these variables; nothing from the trainer's environment passes through.
_SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
_MODES = ("auto", "userns", "privileged")


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or a piece the sandbox needs) is missing or cannot create namespaces here."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one run; ``cpu_s=None`` means "the wall-clock timeout, rounded up"."""

    cpu_s: float | None = None
    memory_bytes: int = 1 << 30
    max_processes: int = 32
    max_file_bytes: int = 16 << 20
    max_open_files: int = 256
    tmpfs_bytes: int = 64 << 20
    max_output_bytes: int = 1 << 20

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and value <= 0:
                raise ValueError(f"SandboxLimits.{field.name} must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Where the tools are and how to launch them.

    ``python`` must live under one of ``ro_binds`` (the system interpreter does); a virtualenv or
    pyenv interpreter under ``/root`` is unreachable for the unprivileged sandbox user.
    """

    limits: SandboxLimits = SandboxLimits()
    python: str = "/usr/bin/python3"
    bwrap: str = "bwrap"
    mode: str = "auto"
    ro_binds: tuple[str, ...] = ("/usr",)
    uid_base: int = 1_600_000_000

    def __post_init__(self):
        if self.mode not in _MODES:
            raise ValueError(f"SandboxConfig.mode must be one of {_MODES}, got {self.mode!r}")
        if not 1000 < self.uid_base < 2**31 - 2**28:
            raise ValueError(f"SandboxConfig.uid_base={self.uid_base} leaves no room for per-run uids")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one sandboxed run produced.

    ``exit_code`` is None when the run was killed for its timeout or never started;
    ``infra_error`` is set (and the output says nothing about the program) when the sandbox itself
    failed — callers must score that as "could not judge", never as a wrong answer.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    infra_error: str | None
    wall_s: float
    output_truncated: bool = False
    reaped: int = 0

    @property
    def ok(self) -> bool:
        return self.infra_error is None and not self.timed_out and self.exit_code == 0


_probe_lock = threading.Lock()
_probed_modes: dict[SandboxConfig, str] = {}
_bwrap_help: dict[str, str] = {}
_uid_counter = itertools.count()


def run_python(source: str, *, stdin: str = "", timeout_s: float = 5.0,
               files: Mapping[str, str] | None = None,
               config: SandboxConfig = SandboxConfig()) -> RunResult:
    """Runs ``source`` as ``/sandbox/main.py`` in a fresh sandbox and returns what it printed.

    ``files`` maps names to contents placed read-only beside it in ``/sandbox`` (importable).
    Raises SandboxUnavailable when bubblewrap is missing or no launch mode works on this host.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    mode = resolve_mode(config)
    return _run(source, stdin, timeout_s, dict(files or {}), config, mode)


def resolve_mode(config: SandboxConfig = SandboxConfig()) -> str:
    """The launch mode to use here, probing once per process; raises SandboxUnavailable."""
    key = config
    with _probe_lock:
        if key in _probed_modes:
            return _probed_modes[key]
        if shutil.which(config.bwrap) is None:
            raise SandboxUnavailable(f"`{config.bwrap}` not found on PATH. {INSTALL_HINT}")
        if not os.access(config.python, os.X_OK):
            raise SandboxUnavailable(
                f"no Python interpreter at {config.python!r} to run inside the sandbox; set "
                "SandboxConfig.python to an interpreter under SandboxConfig.ro_binds")
        candidates = [config.mode] if config.mode != "auto" else ["userns", "privileged"]
        failures = []
        for mode in candidates:
            if mode == "privileged" and os.geteuid() != 0:
                failures.append("privileged: needs root")
                continue
            probe = _run("print('ok')", "", 30.0, {}, config, mode)
            if probe.infra_error is None and probe.stdout.strip() == "ok":
                _probed_modes[key] = mode
                return mode
            failures.append(f"{mode}: {probe.infra_error or probe.stderr.strip()[-300:]}")
        raise SandboxUnavailable(
            "bubblewrap could not start a sandbox here (" + "; ".join(failures) + "). Unprivileged "
            "user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, or on "
            "Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), or run as root. " + INSTALL_HINT)


def _run(source: str, stdin: str, timeout_s: float, files: dict[str, str],
         config: SandboxConfig, mode: str) -> RunResult:
    """One launch in a given mode; every failure of the machinery becomes ``infra_error``."""
    for name in files:
        if not name or "/" in name or name.startswith(".") or name == "main.py":
            raise ValueError(f"sandbox file name {name!r} must be a plain name other than main.py")
    limits = config.limits
    cpu_s = limits.cpu_s if limits.cpu_s is not None else max(1, math.ceil(timeout_s))
    uid = _fresh_uid(config) if os.geteuid() == 0 else os.getuid()
    opened: list[int] = []
    start = time.monotonic()
    try:
        data_fds = {"main.py": processes.memfd("main.py", source, opened)}
        data_fds.update({name: processes.memfd(name, text, opened) for name, text in files.items()})
        stdin_fd = processes.memfd("stdin", stdin, opened)
        out_fd = processes.memfd("stdout", "", opened)
        err_fd = processes.memfd("stderr", "", opened)
        info_r, info_w = processes.pipe(opened)
        ready_r, ready_w = processes.pipe(opened)
        argv = _argv(config, mode, uid, cpu_s, data_fds, info_w, ready_w)
        user_kw = {}
        if mode == "userns" and os.geteuid() == 0:
            user_kw = dict(user=uid, group=uid, extra_groups=[])
        try:
            proc = subprocess.Popen(
                argv, stdin=stdin_fd, stdout=out_fd, stderr=err_fd, env=_SANDBOX_ENV,
                pass_fds=(info_w, ready_w, *data_fds.values()), start_new_session=True,
                close_fds=True, **user_kw)
        except OSError as e:
            return RunResult("", "", None, False, f"could not launch bwrap: {e}",
                             time.monotonic() - start)
        # Our copies of the write ends must go, or the reads below would never see EOF.
        for fd in (info_w, ready_w):
            os.close(fd)
            opened.remove(fd)
        timed_out = not processes.wait_exit(proc, timeout_s)
        if timed_out:
            processes.kill_group(proc.pid)
            proc.wait()
        wall_s = time.monotonic() - start
        pid_ns = processes.read_pid_namespace(info_r)
        reaped = processes.reap(pid_ns) if pid_ns is not None else 0
        started = processes.read_available(ready_r, 1) == b"1"
        stdout, out_trunc = processes.read_capped(out_fd, limits.max_output_bytes)
        stderr, err_trunc = processes.read_capped(err_fd, limits.max_output_bytes)
    finally:
        for fd in opened:
            os.close(fd)
    infra_error = None
    if not started:
        infra_error = ("sandbox did not start before the timeout" if timed_out else
                       f"sandbox failed to start (exit {proc.returncode}): {stderr.strip()[-500:]}")
    exit_code = None if (timed_out or not started) else proc.returncode
    return RunResult(stdout, stderr, exit_code, timed_out, infra_error, wall_s,
                     out_trunc or err_trunc, reaped)


def _argv(config: SandboxConfig, mode: str, uid: int, cpu_s: float, data_fds: dict[str, int],
          info_fd: int, ready_fd: int) -> list[str]:
    """The full bwrap command line for one run."""
    limits = config.limits
    features = _bwrap_features(config.bwrap)
    argv = [config.bwrap]
    if mode == "userns":
        argv += ["--unshare-all", "--unshare-user"]
        if "--disable-userns" in features:
            argv.append("--disable-userns")
    else:
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    for path in config.ro_binds:
        argv += ["--ro-bind", path, path]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path) and path not in config.ro_binds:
            argv += ["--ro-bind", path, path]
    size = ["--size", str(limits.tmpfs_bytes)] if "--size" in features else []
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += size + ["--perms", "1777", "--tmpfs", "/dev/shm"]
    argv += ["--remount-ro", "/dev"]
    argv += size + ["--perms", "1777", "--tmpfs", "/tmp"]
    argv += ["--dir", "/sandbox"]
    for name, fd in data_fds.items():
        argv += ["--perms", "0444", "--ro-bind-data", str(fd), f"/sandbox/{name}"]
    argv += ["--chdir", "/tmp", "--info-fd", str(info_fd)]
    for key, value in _SANDBOX_ENV.items():
        argv += ["--setenv", key, value]
    argv.append("--")
    if mode == "privileged":
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    cpu = int(math.ceil(cpu_s))
    argv += ["prlimit", f"--cpu={cpu}:{cpu + 1}",
             f"--as={limits.memory_bytes}:{limits.memory_bytes}",
             f"--nproc={limits.max_processes}:{limits.max_processes}",
             f"--fsize={limits.max_file_bytes}:{limits.max_file_bytes}",
             f"--nofile={limits.max_open_files}:{limits.max_open_files}",
             "--core=0:0", "--"]
    argv += [config.python, "-I", "-c", _boot_source(ready_fd)]
    return argv


def _boot_source(ready_fd: int) -> str:
    """The interpreter's first code: say "started" on a private fd, then run main.py as __main__.

    The ready byte separates "the program ran and failed" from "the sandbox never came up",
    which bwrap's own exit status cannot.
    """
    return (
        "import os, runpy, sys\n"
        f"os.write({ready_fd}, b'1')\n"
        f"os.close({ready_fd})\n"
        "sys.argv = ['/sandbox/main.py']\n"
        "sys.path.insert(0, '/sandbox')\n"
        "del os\n"
        "runpy.run_path('/sandbox/main.py', run_name='__main__')\n"
    )


def _bwrap_features(bwrap: str) -> str:
    """bwrap's --help text, cached: options like --size and --disable-userns are version-dependent."""
    if bwrap not in _bwrap_help:
        try:
            result = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
            _bwrap_help[bwrap] = result.stdout + result.stderr
        except (OSError, subprocess.TimeoutExpired):
            _bwrap_help[bwrap] = ""
    return _bwrap_help[bwrap]


def _fresh_uid(config: SandboxConfig) -> int:
    """A uid no other live run in this host's pid space uses: per-uid limits stay per run."""
    return config.uid_base + ((os.getpid() & 0x3FFFFF) << 6 | (next(_uid_counter) & 0x3F))


