"""A multi-process job on one machine: the rehearsal of a TPU pod slice or a GPU cluster.

``launch(argv, processes=N)`` starts N copies of the same command, each a process of one
``jax.distributed`` job (``JAX_COORDINATOR_ADDRESS`` on a free local port, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), on the CPU with ``devices_per_process`` devices each. Process 0 prints to
this terminal; the others to ``<log_dir>/process_<i>.log``. When one process fails, the others
are stopped (they would otherwise wait in a collective forever) and its last lines are printed;
SIGTERM and SIGINT are passed on to every process, so a preemption saves a checkpoint as it
would on a pod.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

CHILD_ENV = "R1JAX_LOCAL_CLUSTER_CHILD"


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def _ephemeral_ports() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = map(int, f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free local port below the ephemeral range: a port the kernel hands out as the source of
    outgoing connections could be taken (or self-connected to) by the job's own clients before
    its coordinator binds it."""
    low, _ = _ephemeral_ports()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), max(1025, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(index: int, processes: int, port: int, devices_per_process: int,
              base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env.update({
        CHILD_ENV: "1", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(index),
        "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
        "XLA_FLAGS": " ".join(flags + [
            f"--xla_force_host_platform_device_count={devices_per_process}"]),
    })
    return env


def launch(argv: Sequence[str], *, processes: int, devices_per_process: int = 1,
           log_dir: str = ".") -> int:
    """Runs ``argv`` as ``processes`` processes of one job; returns the job's exit code (the
    first failing process's, 128 + N for one killed by signal N, else 0)."""
    if processes < 1 or devices_per_process < 1:
        raise ValueError(f"need processes >= 1 and devices_per_process >= 1, got {processes}, "
                         f"{devices_per_process}")
    os.makedirs(log_dir, exist_ok=True)
    port = free_port()
    procs, logs = [], []
    for index in range(processes):
        out = None
        if index > 0:
            path = os.path.join(log_dir, f"process_{index}.log")
            logs.append(path)
            out = open(path, "w", encoding="utf-8")
        procs.append(subprocess.Popen(list(argv), env=child_env(index, processes, port,
                                                                devices_per_process),
                                      stdout=out, stderr=subprocess.STDOUT if out else None))
        if out is not None:
            out.close()
    forward = lambda signum, _frame: [p.send_signal(signum) for p in procs  # noqa: E731
                                      if p.poll() is None]
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _wait(procs, logs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait(procs: list[subprocess.Popen], logs: list[str]) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            first = failed[0]
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.time() + 30
            for p in procs:
                try:
                    p.wait(max(deadline - time.time(), 0.1))
                except subprocess.TimeoutExpired:
                    p.kill()
            if first > 0:
                with open(logs[first - 1], encoding="utf-8", errors="replace") as f:
                    tail = f.read()[-4000:]
                print(f"[r1jax] process {first} of {len(procs)} failed (exit {codes[first]}); "
                      f"stopped the others. Its last lines ({logs[first - 1]}):\n{tail}",
                      file=sys.stderr, flush=True)
            else:
                print(f"[r1jax] process 0 of {len(procs)} failed (exit {codes[0]}); stopped "
                      "the others", file=sys.stderr, flush=True)
            # A process killed by signal N reads -N; a shell reports that as 128 + N.
            return codes[first] if codes[first] > 0 else 128 - codes[first]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.1)
