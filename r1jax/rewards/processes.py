"""The process plumbing of the sandbox: memfds and pipes, capped reads, exits with a deadline,
process groups, and reaping whatever is left in a run's pid namespace."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time


def memfd(name: str, text: str, opened: list[int]) -> int:
    fd = os.memfd_create(f"r1jax-sandbox-{name}", os.MFD_CLOEXEC)
    opened.append(fd)
    data = text.encode("utf-8", errors="surrogateescape")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def pipe(opened: list[int]) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    opened += [read_fd, write_fd]
    return read_fd, write_fd


def read_available(fd: int, limit: int) -> bytes:
    """Reads what is already in a pipe whose writers may still be alive; never blocks."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, limit)
    except BlockingIOError:
        return b""


def read_capped(fd: int, limit: int) -> tuple[str, bool]:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, total = [], 0
    while total <= limit:
        chunk = os.read(fd, min(1 << 16, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    data = b"".join(chunks)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def read_pid_namespace(info_fd: int) -> int | None:
    """The pid-namespace inode bwrap reported on --info-fd, or None if it never got that far."""
    raw = read_available(info_fd, 1 << 16)
    try:
        return int(json.loads(raw.decode())["pid-namespace"])
    except (ValueError, KeyError, UnicodeDecodeError):
        return None


def wait_exit(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Waits for ``proc`` up to ``timeout_s``; True if it exited.

    A pidfd wakes us the moment it exits; ``Popen.wait(timeout)`` polls with sleeps growing to 50 ms,
    which would add tens of milliseconds to every short run.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            if time.monotonic() >= deadline:
                return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap(pid_ns: int, deadline_s: float = 2.0) -> int:
    """SIGKILLs every process still in pid namespace ``pid_ns``; returns how many it found.

    The kernel already kills a pid namespace when its pid 1 dies, so this normally finds nothing;
    it exists so that "nothing left running" does not rest on that alone, and it waits (briefly)
    until the namespace is really empty.
    """
    link = f"pid:[{pid_ns}]"
    seen: set[int] = set()
    stop = time.monotonic() + deadline_s
    while True:
        alive = [pid for pid in pids() if ns_link(pid) == link and is_live(pid)]
        if not alive or time.monotonic() > stop:
            return len(seen)
        for pid in alive:
            seen.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def is_live(pid: int) -> bool:
    """False for zombies: bwrap's pid 1 is reaped by the host's init, not by us, a moment later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def ns_link(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
