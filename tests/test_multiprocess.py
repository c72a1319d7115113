"""Multi-process jobs rehearsed on one machine: 2 processes × 1 CPU device give the same metrics,
held-out evaluations and exported weights as 1 process × 2 CPU devices (the same mesh; real values to
float32 rounding: the processes compute on one thread each), for a GRPO
run, an SFT → traces stage chain, and a GRPO run whose processes are all SIGKILLed and rerun."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from r1jax.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BASE = os.path.join(ROOT, "experiments", "assets", "tiny_base")
# The tiny R1-Zero recipe, shrunk: long enough completions that the base writes the template's
# tags and rewards differ within groups.
GRPO = ["steps=4", "prompts_per_step=4", "grpo.group_size=4", "rollout.max_new_tokens=40",
        "data.num_test=8", "eval.num_problems=4", "eval.num_samples=2", "eval.max_new_tokens=40",
        "eval.every=2", "checkpoint.every=2", "checkpoint.max_to_keep=5", "rewards.num_workers=0",
        "logging.tensorboard=false", "logging.progress_bar=false", "logging.samples_every=2",
        "mesh.data=-1", "mesh.fsdp=1"]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """One persistent compilation cache for this module's runs: reruns of a program load it."""
    global _CACHE
    _CACHE = str(tmp_path_factory.mktemp("jax_cache"))


_CACHE = None


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    if _CACHE:
        env.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _run(config, workdir, overrides=(), *, processes, timeout=900):
    """``launch/run.py`` as 2 local processes × 1 device, or 1 process × 2 devices."""
    env = _env()
    cmd = [sys.executable, "launch/run.py", f"--config={config}", f"--workdir={workdir}"]
    cmd += [f"--config.{o}" for o in overrides]
    if processes > 1:
        cmd.append(f"--processes={processes}")
    else:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, _why(done.stdout + done.stderr)
    return done


def _why(output: str) -> str:
    """The lines that say why a run failed: an abort's thread dump would push them out of a tail."""
    keys = ("Error", "error:", "what():", "terminate called", "Fatal Python", "Check failed",
            "[r1jax]")
    lines = [line for line in output.splitlines() if any(k in line for k in keys)]
    return "\n".join(lines[-40:]) + "\n--- last lines ---\n" + output[-1500:]


def _same_files(a, b, names, rounding=False):
    """Equal rows; with ``rounding``, real-valued entries equal to float32 rounding (the rest —
    rewards, lengths, counts, texts — exactly)."""
    for name in names:
        rows_a, rows_b = read_jsonl(os.path.join(a, name)), read_jsonl(os.path.join(b, name))
        assert rows_a, name
        if not rounding:
            assert rows_a == rows_b, name
            continue
        assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b], name
        for row_a, row_b in zip(rows_a, rows_b):
            for key, value in row_a.items():
                if isinstance(value, float) and not value.is_integer():
                    assert row_b[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
                else:
                    assert row_b[key] == value, (name, key)


def _same_weights(a, b, name="export/model.safetensors", rounding=False):
    wa, wb = load_file(os.path.join(a, name)), load_file(os.path.join(b, name))
    assert wa.keys() == wb.keys()
    for key in wa:
        if rounding:
            np.testing.assert_allclose(wa[key], wb[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


# A process of a CPU job computes on one thread (r1jax.distributed), one process with two devices
# on several: a reduction split over threads rounds its last bit differently, so a 2-process run's
# real-valued metrics and weights equal the 1-process run's to float32 rounding (after 4 steps,
# 6e-8 at most in the weights; rewards, samples and evaluations exactly).
ROUNDING = True


@pytest.fixture(scope="module")
def grpo_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    two, one = str(root / "two_processes"), str(root / "one_process")
    _run("experiments/r1_zero.py", two, GRPO, processes=2)
    _run("experiments/r1_zero.py", one, GRPO, processes=1)
    return two, one


def test_grpo_two_processes_equal_one_process_with_two_devices(grpo_runs):
    two, one = grpo_runs
    _same_files(two, one, ["metrics.jsonl", "eval.jsonl", "samples.jsonl"], rounding=ROUNDING)
    _same_weights(two, one, rounding=ROUNDING)
    rewards = [r["reward"] for r in read_jsonl(os.path.join(two, "metrics.jsonl"))]
    assert any(r > 0 for r in rewards)  # the runs compare real learning signal, not all zeros
    assert os.path.isfile(os.path.join(two, "process_1.log"))  # the other process's output
    assert json.load(open(os.path.join(two, "summary.json")))["steps"] == 4


def _checkpoints(workdir):
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(path) if d.isdigit() and os.path.isfile(
        os.path.join(path, d, "commit_success.txt"))) if os.path.isdir(path) else []


def test_sigkill_of_every_process_then_rerun_resumes_exactly(grpo_runs, tmp_path):
    two, _ = grpo_runs
    workdir = str(tmp_path / "killed")
    cmd = [sys.executable, "launch/run.py", "--config=experiments/r1_zero.py",
           f"--workdir={workdir}", "--processes=2"] + [f"--config.{o}" for o in GRPO]
    log = tmp_path / "launcher.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    start = time.time()
    while 2 not in _checkpoints(workdir):
        assert proc.poll() is None, ("the run ended before its first checkpoint",
                                     _why(log.read_text()))
        assert time.time() - start < 600, "timed out"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both processes, at once
    proc.wait()
    assert not os.path.isfile(os.path.join(workdir, "summary.json"))
    _run("experiments/r1_zero.py", workdir, GRPO, processes=2)
    _same_files(two, workdir, ["metrics.jsonl", "eval.jsonl"])
    _same_weights(two, workdir)


def _chain_experiment(tmp_path):
    """Cold-start SFT of the tiny base, then traces sampled from its export."""
    stages = dict(
        cold_start=dict(
            job="sft", name="mp_sft", model=dict(checkpoint=TINY_BASE),
            data=dict(train="synthetic-cot:arithmetic", test="synthetic-cot:arithmetic",
                      synthetic_count=32, difficulty=2, seq_len=192),
            sft=dict(optim=dict(learning_rate=1e-4, warmup_steps=1)),
            epochs=1, batch_rows=4, eval_every=4, checkpoint_every=4, progress_bar=False,
            mesh=dict(data=-1, fsdp=1, tensor=1)),
        traces=dict(
            job="traces", name="mp_traces", model=dict(checkpoint="{workdir}/cold_start/export"),
            output_dir="{workdir}/traces/out",
            data=dict(train="synthetic:arithmetic", difficulty=2, num_train=8),
            sampling=dict(num_samples=2, max_new_tokens=40, batch_prompts=4),
            filters=dict(require_correct=False, require_format=False, min_language=0.0),
            reward_workers=0, progress_bar=False, mesh=dict(data=-1, fsdp=1, tensor=1)))
    path = tmp_path / "chain.py"
    path.write_text("import ml_collections\n\n\ndef get_config(arg=None):\n"
                    "    return ml_collections.ConfigDict("
                    f"{dict(job='stages', order=('cold_start', 'traces'), stages=stages)!r})\n")
    return str(path)


def test_sft_then_traces_chain_two_processes_equal_one_process(tmp_path):
    experiment = _chain_experiment(tmp_path)
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    _run(experiment, two, processes=2)
    _run(experiment, one, processes=1)
    _same_files(os.path.join(two, "cold_start"), os.path.join(one, "cold_start"),
                ["metrics.jsonl", "eval.jsonl"], rounding=ROUNDING)
    _same_weights(os.path.join(two, "cold_start"), os.path.join(one, "cold_start"),
                  rounding=ROUNDING)
    _same_files(os.path.join(two, "traces", "out"), os.path.join(one, "traces", "out"),
                ["data.jsonl"])
    summary = json.load(open(os.path.join(two, "summary.json")))
    assert summary["stages"]["traces"]["generated"] == 16
