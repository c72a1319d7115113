"""XLA:TPU's own account of a compiled program's memory, for the rollout memory benchmark
(``rollout_memory.py``): the memory-usage report of an ``xla_dump_to`` dump (temporaries packed
by live range), byte counts extrapolated over layer counts, and what a chip must hold to run it.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from r1jax.rl.aot_memory import GiB, ProgramMemory


def gib(n) -> str:
    """Bytes as GiB to two places, without the unit (table cells)."""
    return f"{n / GiB:.2f}"


@dataclasses.dataclass(frozen=True)
class Compiled:
    program: ProgramMemory
    layers: int
    seconds: float
    kv_carry_bytes: int  # per chip, from the jaxpr
    heap: HeapReport | None = None
    kernels: tuple[str, ...] = ()  # the Pallas kernels it calls


@dataclasses.dataclass(frozen=True)
class HeapReport:
    """XLA:TPU's memory-usage report of a compiled program (``xla_dump_to``): the default memory
    space's total (its allocations packed by live range, so it can be below ``temp_bytes``, the
    sum of the allocations) and the allocations grouped by size, largest groups first."""

    total_bytes: int
    groups: tuple[tuple[int, int, str], ...]  # (count, bytes each, an example of the values)

    def summary(self, top: int = 6) -> str:
        parts = [f"{n} x {_size(b)} ({shapes})" for n, b, shapes in self.groups[:top]]
        return f"heap {gib(self.total_bytes)} GiB; largest allocations: " + "; ".join(parts)


_UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def _parse_size(text: str) -> int:
    text = text.strip()
    for unit in ("KiB", "MiB", "GiB", "TiB", "B"):
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * _UNIT[unit])
    raise ValueError(text)


def read_heap_report(dump_dir: str) -> HeapReport | None:
    """The largest module's memory-usage report in an XLA dump (None if there is none)."""
    best = None
    for name in os.listdir(dump_dir):
        if not name.endswith("memory-usage-report.txt"):
            continue
        with open(os.path.join(dump_dir, name), encoding="utf-8") as f:
            lines = f.read().split("Memory Space:")[1].splitlines()  # the default space
        total = int(lines[1].split(":")[1].split()[0])
        groups: dict[int, list] = {}
        for line in lines[4:]:
            cells = line.split(";")
            if len(cells) < 5:
                break
            size = _parse_size(cells[1])
            groups.setdefault(size, [0, cells[4].strip()])[0] += 1
        ranked = sorted(((n, b, shapes) for b, (n, shapes) in groups.items()),
                        key=lambda g: -g[0] * g[1])
        if best is None or total > best.total_bytes:
            best = HeapReport(total, tuple(ranked))
    return best


class WithOptions:
    """A ``Lowered`` whose ``compile()`` passes compiler options (``program_memory`` calls it)."""

    def __init__(self, lowered, options):
        self.lowered, self.options = lowered, options

    def compile(self):
        return self.lowered.compile(compiler_options=self.options)


def extrapolate(runs: list[Compiled], layers: int, name: str) -> tuple[ProgramMemory, int | None]:
    """Each byte count of ``runs`` (compiled at different layer counts) on a line in the layers,
    evaluated at ``layers`` (a refusal's total the same way), and the heap total likewise (None
    unless every run has one)."""
    xs = np.array([r.layers for r in runs], float)

    def at(values):
        values = np.array(values, float)
        if len(set(xs)) < 2:
            return int(values[-1] * layers / xs[-1])  # one point: proportional
        slope, intercept = np.polyfit(xs, values, 1)
        return round(intercept + slope * layers)

    progs = [r.program for r in runs]
    heap = (at([r.heap.total_bytes for r in runs]) if all(r.heap for r in runs) else None)
    if any(p.refused for p in progs):
        needed = at([p.peak_bytes for p in progs])
        return ProgramMemory(name, 0, 0, 0, 0, 0, needed, "extrapolated from a refusal"), heap
    fields = ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "code_bytes")
    return ProgramMemory(name, *(at([getattr(p, f) for p in progs]) for f in fields)), heap


def need_bytes(p: ProgramMemory, heap: int | None) -> int:
    """What the chip must hold while the program runs: arguments, new outputs, code, and the
    temporaries as XLA:TPU packs them (the heap, which its out-of-memory check compares with the
    HBM; a refusal's figure is that heap) or, without a heap report, their plain sum."""
    if p.refused:
        return p.required_bytes
    temps = p.temp_bytes if heap is None else heap
    return p.argument_bytes + p.new_output_bytes + temps + p.code_bytes
