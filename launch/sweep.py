"""Expand a sweep beside an experiment into runs; run them here one after another, or print one
launch command per run for a cluster; then compare their final metrics.

    python launch/sweep.py --config=experiments/r1_zero.py \
        --sweep=experiments/sweeps/grpo_variants.py[:family] [--mode=print] [--only=grpo,dapo]

Each run is ``launch/run.py`` with the sweep's overrides as ``--config.<key>=<value>`` flags and
its own work directory under ``--root`` (default ``runs/sweep_<sweep>``); rerunning resumes.
"""
import os
import shlex
import subprocess
import sys

from r1jax import platform

platform.configure()  # before jax loads; without a TPU, skips libtpu's probe and its error text

from absl import app, flags  # noqa: E402

from r1jax import pipeline  # noqa: E402
from r1jax.metrics import markdown_table  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "experiment file[:variant]")
_SWEEP = flags.DEFINE_string("sweep", None, "sweep file[:arg] with get_sweep(arg)")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "print"], "run here, or print commands")
_ROOT = flags.DEFINE_string("root", None, "parent of the runs' work directories")
_ONLY = flags.DEFINE_list("only", None, "run only these names")
_OVERRIDE = flags.DEFINE_multi_string("override", [], "key=value applied to every run")
flags.mark_flags_as_required(["config", "sweep"])

METRICS = ("pass@1", "format_rate", "mean_length", "truncation_rate")


def _load_sweep(spec):
    path, _, arg = spec.partition(":")
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("r1jax_sweep", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_sweep(arg or None)


def _flag(key, value):
    if isinstance(value, bool):
        value = str(value).lower()
    return f"--config.{key}={value}"


def commands(config, sweep, root, only, overrides):
    base = pipeline.load_experiment(config)  # validates the experiment before anything runs
    runs = []
    for run in sweep:
        run = dict(run)
        name = run.pop("name")
        if only and name not in only:
            continue
        trial = base.copy_and_resolve_references()
        trial.update_from_flattened_dict(run)  # unknown keys fail here, naming the key
        workdir = os.path.join(root, name.replace("/", "_"))
        argv = [sys.executable, "launch/run.py", f"--config={config}", f"--workdir={workdir}"]
        argv += [_flag(k, v) for k, v in run.items()] + [f"--config.{o}" for o in overrides]
        runs.append((name, workdir, argv))
    if not runs:
        raise ValueError(f"no run of the sweep is selected (--only={only})")
    return runs


def main(argv):
    del argv
    sweep_name = os.path.splitext(os.path.basename(_SWEEP.value.partition(":")[0]))[0]
    root = _ROOT.value or os.path.join("runs", f"sweep_{sweep_name}")
    runs = commands(_CONFIG.value, _load_sweep(_SWEEP.value), root, _ONLY.value, _OVERRIDE.value)
    if _MODE.value == "print":
        for _, _, argv in runs:
            print(shlex.join(["python", *argv[1:]]))
        return
    rows = []
    for name, workdir, argv in runs:
        print(f"[sweep] {name}: {shlex.join(argv)}", flush=True)
        subprocess.run(argv, check=True)
        final = pipeline.read_summary(workdir)["final"]
        rows.append([name] + [final.get(m, float("nan")) for m in METRICS])
    table = markdown_table(["run", *METRICS], rows)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
