"""What ``r1jax.rl.aot`` reports: per-program and per-phase bytes per chip, the HBM of each TPU
generation, XLA's out-of-memory messages read as a verdict, and the report's table and JSON."""
from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import numpy as np

GiB = 1024**3
# High-bandwidth memory per chip, by TPU generation (public specifications).
TPU_HBM_BYTES = {"v4": 32 * GiB, "v5e": 16 * GiB, "v5litepod": 16 * GiB, "v5p": 95 * GiB,
                 "v6e": 32 * GiB}


class BudgetError(ValueError):
    """The run's budgets, batch shapes or checkpoint cannot run on this model and mesh (refused
    before anything compiles, as the run itself would refuse them at start-up)."""


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """One compiled program's bytes per chip (``memory_analysis()``). When XLA:TPU refuses to
    compile it for want of HBM, ``required_bytes`` is the total it says the program needs (its
    arguments, outputs and temporaries together) and ``note`` its message."""

    name: str
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    required_bytes: int | None = None
    note: str = ""
    compile_s: float = 0.0  # lowering and compiling it here, wall clock (big MoE: minutes)

    @property
    def refused(self) -> bool:
        return self.required_bytes is not None

    @property
    def new_output_bytes(self) -> int:
        """Outputs not written into donated inputs."""
        return self.output_bytes - self.alias_bytes

    @property
    def peak_bytes(self) -> int:
        """Live at once while it runs: inputs, new outputs, temporaries and its code."""
        if self.refused:
            return self.required_bytes
        return self.argument_bytes + self.new_output_bytes + self.temp_bytes + self.code_bytes


@dataclasses.dataclass(frozen=True)
class Phase:
    """A program as one step of the run runs it, with what stays resident around it (per chip)."""

    name: str
    runs: str  # how often: "1/step", "16/step", "every 200 steps"
    program: ProgramMemory
    resident: tuple[tuple[str, int], ...]  # (what, bytes) held outside the program's arguments

    @property
    def resident_bytes(self) -> int:
        return sum(n for _, n in self.resident)

    @property
    def peak_bytes(self) -> int:
        return self.resident_bytes + self.program.peak_bytes


@dataclasses.dataclass(frozen=True)
class AOTReport:
    topology: str
    chips: int
    model: str
    parameters: int
    shapes: dict
    state_bytes: dict  # per chip: parameters, optimizer state, reference
    phases: tuple[Phase, ...]
    hbm_bytes: int | None
    skipped: tuple[str, ...] = ()  # phases the run has that were not compiled (``programs=``)

    @property
    def programs(self) -> tuple[ProgramMemory, ...]:
        return tuple(p.program for p in self.phases)

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: p.peak_bytes).name

    def fits(self) -> bool | None:
        """False if any phase exceeds the chip's HBM (or XLA refused a program); True if every
        phase of the run was compiled and fits; None when unknown (no HBM size, or phases left
        out and none of those compiled exceeds it)."""
        if self.hbm_bytes is None:
            return None
        if self.peak_bytes > self.hbm_bytes or any(p.refused for p in self.programs):
            return False
        return None if self.skipped else True

    def verdict(self) -> str:
        peak = f"peak per chip {_gib(self.peak_bytes)} ({self.peak_phase})"
        left_out = f"; not compiled: {', '.join(self.skipped)}" if self.skipped else ""
        if self.hbm_bytes is None:
            return f"{peak}; no HBM size known for this platform{left_out}"
        fits = self.fits()
        if fits is False:
            return (f"{peak}: DOES NOT FIT in {_gib(self.hbm_bytes)} of HBM "
                    f"({_gib(self.peak_bytes - self.hbm_bytes)} over){left_out}")
        if fits is None:
            return f"{peak}: the phases compiled fit in {_gib(self.hbm_bytes)}{left_out}"
        return f"{peak}: fits in {_gib(self.hbm_bytes)} of HBM"

    def _header(self) -> list[str]:
        s, b = self.shapes, self.state_bytes
        reference = (f", reference {_gib(b['reference'])}" if b["reference"] else
                     ", no reference (beta = 0)")
        return [
            f"{self.model} ({self.parameters / 1e9:.2f}B parameters) on {self.topology} "
            f"({self.chips} chips); bytes per chip.",
            f"Step: {s['prompts']} prompts x {s['group_size']} samples, prompts padded to "
            f"{s['prompt_width']} + {s['max_new_tokens']} new tokens; {s['minibatches']} "
            f"minibatch(es) of {s['minibatch_rows']} rows x {s['iterations']} iteration(s).",
            f"Held through the run: parameters {_gib(b['parameters'])}, optimizer state "
            f"{_gib(b['optimizer'])}{reference}.",
        ]

    def _cells(self, p: Phase) -> list[str]:
        m = p.program
        if m.refused:
            return [_gib(p.resident_bytes), "-", "-", "-", f"{_gib(p.peak_bytes)} (XLA)"]
        return [_gib(p.resident_bytes), _gib(m.argument_bytes), _gib(m.new_output_bytes),
                _gib(m.temp_bytes), _gib(p.peak_bytes)]

    def table(self) -> str:
        lines = self._header()
        widths = (14, 16, 11, 11, 11, 13, 20)  # room for "1060.07 GiB (XLA)"
        head = ("phase", "runs", "resident", "arguments", "outputs", "temporaries", "peak")
        lines.append(head[0].ljust(widths[0]) + "".join(h.rjust(w) for h, w in
                                                        zip(head[1:], widths[1:])))
        for p in self.phases:
            cells = [p.runs] + self._cells(p)
            lines.append(p.name.ljust(widths[0]) + "".join(c.rjust(w) for c, w in
                                                           zip(cells, widths[1:])))
        lines.append("resident: held outside the program's arguments; outputs: new ones (the "
                     "update writes its state into the donated one); peak adds the code.")
        for p in self.phases:
            lines.append(f"  {p.name}: " + ", ".join(f"{what} {_gib(n)}" for what, n in p.resident
                                                     if n))
            if p.program.refused:
                lines.append(f"  {p.name}: XLA:TPU refused to compile it: {p.program.note}")
        timed = [f"{m.name} {_duration(m.compile_s)}" for m in self.programs if m.compile_s]
        if timed:
            lines.append("compiled here in: " + ", ".join(timed))
        lines.append(self.verdict())
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| phase | runs | resident | arguments | outputs | temporaries | peak per chip |",
                 "|---|---|---|---|---|---|---|"]
        for p in self.phases:
            lines.append("| " + " | ".join([p.name, p.runs] + self._cells(p)) + " |")
        return "\n".join(lines + ["", self.verdict()])


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _gib(n: int) -> str:
    """GiB to two places; below a tenth of one, MiB."""
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB // 10 else f"{n / 2**20:.1f} MiB"


class CompileError(RuntimeError):
    """A program of the run does not compile for the topology (nor would it on the slice)."""


def compiler_options(platform: str) -> dict:
    """For the train state's layout only: XLA:TPU refuses a program that needs more HBM than the
    chip has; told not to crash, it still compiles one that just creates the state."""
    return {"xla_tpu_no_crash_on_oom": "true"} if platform == "tpu" else {}


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_OOM_PATTERNS = (
    re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM"),
    re.compile(r"Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm"),
)


def required_bytes(message: str) -> int | None:
    """The bytes XLA:TPU says a program needs, from its out-of-memory message."""
    for pattern in _OOM_PATTERNS:
        m = pattern.search(message)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    return None


def program_memory(name: str, lower) -> ProgramMemory:
    """Lower and compile one program (``lower()`` returns its ``Lowered``) and read its bytes;
    a program XLA:TPU refuses for want of HBM is recorded with the total it says it needs."""
    start = time.perf_counter()
    try:
        compiled = lower().compile()
    except Exception as e:  # XLA, Mosaic and tracing errors alike: name the program
        message = str(e)
        if "RESOURCE_EXHAUSTED" in message:
            needed = required_bytes(message)
            note = message.strip().splitlines()[0][:300]
            # Unparsed: at least one byte over any chip, so the verdict cannot read "fits".
            return ProgramMemory(name, 0, 0, 0, 0, 0, needed if needed is not None else 2**62,
                                 note, time.perf_counter() - start)
        raise CompileError(f"{name}: compiling it for the topology failed, and the run would "
                           f"fail there too: {type(e).__name__}: {e}") from e
    m = compiled.memory_analysis()
    return ProgramMemory(name, int(m.argument_size_in_bytes), int(m.output_size_in_bytes),
                         int(m.alias_size_in_bytes), int(m.temp_size_in_bytes),
                         int(m.generated_code_size_in_bytes),
                         compile_s=time.perf_counter() - start)


def chip_bytes(tree) -> int:
    """Bytes of one device's shard of every leaf of a tree of sharded ``ShapeDtypeStruct``s."""
    total = 0
    for x in jax.tree.leaves(tree):
        sharding = getattr(x, "sharding", None)
        shape = sharding.shard_shape(x.shape) if sharding is not None else x.shape
        total += math.prod(shape) * np.dtype(x.dtype).itemsize
    return total
