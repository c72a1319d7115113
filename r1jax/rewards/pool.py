"""Scoring a batch in worker processes, each item under a timeout.

Why not ``concurrent.futures``: a reward can hang (sympy simplifying a pathological expression, a
sandbox that will not die), and an executor can neither time out one item nor get its worker back.
Here each worker serves one item at a time over a pipe; an item past its deadline has its worker
SIGKILLed and replaced, and counts as a timeout. A reward that raises, or a worker that dies, gives
None for that item and is counted too. Results always come back in input order.

Workers start with ``forkserver`` by default: the trainer holds accelerator runtimes and threads,
which ``fork`` would copy, and the fork server preloads the reward modules once for all workers.
Sandbox runs started by a killed worker die with it (bwrap's ``--die-with-parent``).
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import multiprocessing.connection
import signal
import time
from typing import Any, Callable, Mapping, Sequence

from r1jax.rewards.combine import COMPONENTS, RewardBreakdown, RewardConfig, RewardInput, score

_PRELOAD = ["r1jax.rewards.combine"]


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Per-item values (None where the item raised, timed out or crashed its worker) and counts."""

    values: tuple[Any, ...]
    errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    messages: tuple[str, ...] = ()


class RewardPool:
    """A fixed set of worker processes that map a function over items with a per-item timeout.

    ``num_workers=0`` runs items in this process, in order, with exceptions counted but no timeout
    (for tests and debugging). Use as a context manager, or call ``close()``.
    """

    def __init__(self, num_workers: int = 2, *, timeout_s: float = 60.0, start_method: str = "forkserver"):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.num_workers, self.timeout_s = num_workers, timeout_s
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._workers = [self._spawn() for _ in range(num_workers)]

    def map(self, fn: Callable[..., Any], items: Sequence[tuple]) -> BatchResult:
        """``fn(*item)`` for every item; ``fn`` must be picklable (a module-level function)."""
        if self._workers is None:
            raise RuntimeError("RewardPool is closed")
        if self.num_workers == 0:
            return _map_inline(fn, items)
        values: list[Any] = [None] * len(items)
        pending = collections.deque(enumerate(items))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (item index, deadline)
        counts = collections.Counter()
        messages: list[str] = []
        while pending or busy:
            for slot in range(len(self._workers)):
                if slot not in busy and pending:
                    index, args = pending.popleft()
                    try:
                        self._workers[slot].conn.send((fn, tuple(args)))
                    except (OSError, ValueError) as e:  # unpicklable, or the worker already died
                        counts["errors"] += 1
                        messages.append(f"item {index}: could not send: {type(e).__name__}: {e}")
                        self._replace(slot)
                        continue
                    busy[slot] = (index, time.monotonic() + self.timeout_s)
            if not busy:
                continue
            next_deadline = min(deadline for _, deadline in busy.values())
            conns = {self._workers[slot].conn: slot for slot in busy}
            ready = multiprocessing.connection.wait(list(conns), max(0.0, next_deadline - time.monotonic()))
            for conn in ready:
                slot = conns[conn]
                index, _ = busy.pop(slot)
                try:
                    status, payload = conn.recv()
                except (EOFError, OSError):
                    counts["crashes"] += 1
                    messages.append(f"item {index}: worker died (exit {self._workers[slot].process.exitcode})")
                    self._replace(slot)
                    continue
                if status == "ok":
                    values[index] = payload
                else:
                    counts["errors"] += 1
                    messages.append(f"item {index}: {payload}")
            now = time.monotonic()
            for slot, (index, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[slot]
                    counts["timeouts"] += 1
                    messages.append(f"item {index}: timed out after {self.timeout_s}s")
                    self._replace(slot)
        return BatchResult(tuple(values), counts["errors"], counts["timeouts"], counts["crashes"], tuple(messages))

    def close(self) -> None:
        if self._workers is None:
            return
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = None

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self) -> "_Worker":
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child_conn,), daemon=True,
                                    name="r1jax-reward-worker")
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn)

    def _replace(self, slot: int) -> None:
        worker = self._workers[slot]
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self._workers[slot] = self._spawn()


@dataclasses.dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A worker's loop: one ``(fn, args)`` in, one ``("ok", value)`` or ``("error", text)`` out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # the function could not be unpickled here (e.g. not importable)
            conn.send(("error", f"task not receivable: {type(e).__name__}: {e}"))
            continue
        if message is None:
            return
        fn, args = message
        try:
            reply = ("ok", fn(*args))
        except Exception as e:
            reply = ("error", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except Exception as e:  # the value could not be pickled
            conn.send(("error", f"result not sendable: {type(e).__name__}: {e}"))


def _map_inline(fn: Callable[..., Any], items: Sequence[tuple]) -> BatchResult:
    values, messages = [], []
    for index, args in enumerate(items):
        try:
            values.append(fn(*args))
        except Exception as e:
            values.append(None)
            messages.append(f"item {index}: {type(e).__name__}: {e}")
    return BatchResult(tuple(values), len(messages), 0, 0, tuple(messages))


@dataclasses.dataclass(frozen=True)
class BatchScores:
    """Per-sample breakdowns (None where scoring failed outright) and the batch's reward metrics."""

    breakdowns: tuple[RewardBreakdown | None, ...]
    metrics: Mapping[str, float]

    @property
    def totals(self) -> tuple[float | None, ...]:
        return tuple(b.total if b is not None else None for b in self.breakdowns)


def score_batch(samples: Sequence[RewardInput], config: RewardConfig = RewardConfig(),
                pool: RewardPool | None = None) -> BatchScores:
    """Scores every sample (in ``pool`` if given, else here) and summarizes the batch."""
    runner = pool if pool is not None else RewardPool(0)
    result = runner.map(score, [(sample, config) for sample in samples])
    return BatchScores(result.values, batch_metrics(result, [name for name, _ in config.weights]))


def batch_metrics(result: BatchResult, names: Sequence[str] = COMPONENTS) -> dict[str, float]:
    """Reward metrics: per component the mean over judged samples and the count not judged; the
    total's mean and count not judged; and counts of raising components, timeouts and crashes."""
    breakdowns = [b for b in result.values if b is not None]
    metrics: dict[str, float] = {}
    for name in list(names) + ["total"]:
        if name == "total":
            values = [b.total for b in result.values if b is not None]
            missing = len(result.values) - len(values)
        else:
            values = [b.components.get(name) for b in breakdowns]
            missing = len(result.values) - len(breakdowns)
        judged = [v for v in values if v is not None]
        metrics[f"rewards/{name}/mean"] = sum(judged) / len(judged) if judged else float("nan")
        metrics[f"rewards/{name}/unjudged"] = float(missing + len(values) - len(judged))
    metrics["rewards/errors"] = float(result.errors + sum(len(b.errors) for b in breakdowns))
    metrics["rewards/timeouts"] = float(result.timeouts)
    metrics["rewards/crashes"] = float(result.crashes)
    return metrics
