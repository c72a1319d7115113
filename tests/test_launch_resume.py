"""Exact resume of SFT and reward-model runs as a user runs them: launch/run.py killed (SIGKILL)
or preempted (SIGTERM), then rerun with the same command, ends bitwise equal to a run that was
never interrupted (exported weights, metrics.jsonl, eval.jsonl)."""
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
MESH = dict(data=-1, fsdp=1, tensor=1)
# Tiny batches and many steps: an uninterrupted run takes a few seconds after compile, so a
# signal sent once a few steps are logged lands mid-run.
STEPS = {"sft": 120, "reward_model": 120}


def _config(job, policy):
    if job == "sft":  # each example (~180 tokens) fills a row: 60 rows, 2 epochs of 1-row steps
        return dict(
            job="sft", name="sft_resume", model=dict(checkpoint=policy),
            data=dict(train="synthetic-cot:arithmetic", test="synthetic-cot:arithmetic",
                      synthetic_count=STEPS["sft"] // 2, difficulty=1, seq_len=192),
            sft=dict(optim=dict(learning_rate=1e-3, schedule="cosine", warmup_steps=2,
                                final_lr_fraction=0.1)),
            epochs=2, batch_rows=1, eval_every=25, checkpoint_every=10, max_to_keep=3,
            progress_bar=False, tensorboard=False, mesh=MESH)
    return dict(
        job="reward_model", name="rm_resume", model=dict(checkpoint=policy),
        data=dict(num_train=STEPS["reward_model"], num_test=8, max_tokens=32),
        optim=dict(learning_rate=1e-3, warmup_steps=2, schedule="cosine", total_steps=200,
                   final_lr_fraction=0.05),
        epochs=1, batch_pairs=1, eval_every=25, checkpoint_every=10, progress_bar=False,
        tensorboard=False, mesh=MESH)


def _experiment(tmp_path, job, policy):
    """A tiny experiment file (``get_config(arg=None)``) for ``launch/run.py --config=``."""
    path = tmp_path / f"{job}_experiment.py"
    path.write_text("import ml_collections\n\n\ndef get_config(arg=None):\n"
                    f"    return ml_collections.ConfigDict({_config(job, policy)!r})\n")
    return str(path)


def _env(cache):
    """One CPU device, as a user's run; a persistent compilation cache (in the test's temporary
    directory) shared by the runs of this module, so only the first run of each job compiles."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _cmd(experiment, workdir, extra=()):
    return [sys.executable, "launch/run.py", f"--config={experiment}", f"--workdir={workdir}"] \
        + [f"--config.{o}" for o in extra]


def _run(cmd, env):
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def _start(cmd, env):
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc, timeout=120):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stdout.read()[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _checkpoint_steps(workdir):
    path = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(path):
        return []
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()
                  and os.path.isfile(os.path.join(path, d, "commit_success.txt")))


def _rows(workdir, name):
    return read_jsonl(os.path.join(workdir, name))


def _assert_same_run(a, b, job):
    """Bitwise-equal exports and equal metrics/eval rows in work directories ``a`` and ``b``."""
    files = ["model.safetensors"] + (["reward_head.safetensors"] if job == "reward_model" else [])
    for name in files:
        x = load_file(os.path.join(a, "export", name))
        y = load_file(os.path.join(b, "export", name))
        assert sorted(x) == sorted(y), name
        for key in x:
            assert x[key].dtype == y[key].dtype, f"{name}:{key}"
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert _rows(a, name) == _rows(b, name), name
    assert [r["step"] for r in _rows(a, "metrics.jsonl")] == list(range(1, STEPS[job] + 1))


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module", params=["sft", "reward_model"])
def straight(request, tiny_policy_dir, tmp_path_factory, compile_cache):
    """``(job, experiment file, work directory, env)`` of an uninterrupted run of the job."""
    job, env = request.param, _env(compile_cache)
    tmp = tmp_path_factory.mktemp(job)
    experiment = _experiment(tmp, job, tiny_policy_dir)
    workdir = str(tmp / "straight")
    _run(_cmd(experiment, workdir), env)
    assert len(_rows(workdir, "eval.jsonl")) >= 3  # initial, mid-run and final evaluations
    return job, experiment, workdir, env


def test_sigkill_then_rerun_ends_identical_to_an_uninterrupted_run(straight, tmp_path):
    job, experiment, reference, env = straight
    workdir = str(tmp_path / "killed")
    proc = _start(_cmd(experiment, workdir), env)
    _wait_for(lambda: _checkpoint_steps(workdir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(workdir, "export")), "the run ended before the kill"
    assert not os.path.isfile(os.path.join(workdir, "summary.json"))
    assert len(_rows(workdir, "metrics.jsonl")) < STEPS[job]
    _run(_cmd(experiment, workdir), env)
    _assert_same_run(reference, workdir, job)


def test_sigterm_saves_a_checkpoint_at_the_current_step_then_resumes_exactly(straight, tmp_path):
    job, experiment, reference, env = straight
    workdir = str(tmp_path / "preempted")
    cmd = _cmd(experiment, workdir, ["checkpoint_every=100000"])
    proc = _start(cmd, env)
    _wait_for(lambda: len(_rows(workdir, "metrics.jsonl")) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {out[-3000:]}"
    last = _rows(workdir, "metrics.jsonl")[-1]["step"]
    assert 2 <= last < STEPS[job]
    assert _checkpoint_steps(workdir)[-1:] == [last]
    assert not os.path.exists(os.path.join(workdir, "export"))
    assert not os.path.isfile(os.path.join(workdir, "summary.json"))
    _run(cmd, env)
    _assert_same_run(reference, workdir, job)
