"""The entry points as a user runs them: launch/run.py killed and resumed, SIGTERM, sweeps."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

from r1jax.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough for a test: the tiny recipe on the tiny random policy, shrunk.
SMALL = ["steps=6", "prompts_per_step=4", "grpo.group_size=4", "rollout.max_new_tokens=12",
         "data.difficulty=1", "data.num_test=8", "eval.num_problems=4", "eval.num_samples=2",
         "eval.max_new_tokens=12", "eval.every=0", "checkpoint.every=2", "checkpoint.max_to_keep=5",
         "rewards.num_workers=0", "logging.tensorboard=false", "logging.progress_bar=false",
         "logging.samples_every=0", "data.max_prompt_tokens=192"]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return env


def _run_cmd(policy, workdir, extra=()):
    return [sys.executable, "launch/run.py", f"--config=experiments/r1_zero.py:ckpt={policy}",
            f"--workdir={workdir}"] + [f"--config.{o}" for o in SMALL + list(extra)]


def _wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stdout.read()[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.2)


def _checkpoint_steps(workdir):
    path = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(path):
        return []
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()
                  and os.path.isfile(os.path.join(path, d, "commit_success.txt")))


def test_sigkill_then_rerun_ends_identical_to_an_uninterrupted_run(tiny_policy_dir, tmp_path):
    straight = str(tmp_path / "straight")
    done = subprocess.run(_run_cmd(tiny_policy_dir, straight), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(_run_cmd(tiny_policy_dir, killed), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: 4 in _checkpoint_steps(killed), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.isfile(os.path.join(killed, "summary.json"))
    rerun = subprocess.run(_run_cmd(tiny_policy_dir, killed), cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    a = load_file(os.path.join(straight, "export", "model.safetensors"))
    b = load_file(os.path.join(killed, "export", "model.safetensors"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert read_jsonl(os.path.join(straight, "metrics.jsonl")) == \
        read_jsonl(os.path.join(killed, "metrics.jsonl"))


def test_sigterm_saves_a_checkpoint_at_the_current_step(tiny_policy_dir, tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(_run_cmd(tiny_policy_dir, workdir, ["steps=50",
                                                                "checkpoint.every=1000"]),
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    _wait_for(lambda: len(read_jsonl(metrics)) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    last = read_jsonl(metrics)[-1]["step"]
    assert _checkpoint_steps(workdir) == [last] and 2 <= last < 50


def test_sweep_runs_two_variants_and_compares_them(tiny_policy_dir, tmp_path):
    root = str(tmp_path / "sweep")
    cmd = [sys.executable, "launch/sweep.py", f"--config=experiments/r1_zero.py:ckpt={tiny_policy_dir}",
           "--sweep=experiments/sweeps/grpo_variants.py:objective", "--only=grpo,dapo",
           f"--root={root}"] + [f"--override={o}" for o in SMALL + ["steps=2"]]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = open(os.path.join(root, "comparison.md")).read()
    assert "| grpo |" in table and "| dapo |" in table
    dapo = read_jsonl(os.path.join(root, "dapo", "metrics.jsonl"))
    assert [r["step"] for r in dapo] == [1, 2] and all(r["kl"] == 0 for r in dapo)


def test_sweep_print_mode_and_unknown_keys(tmp_path):
    cmd = [sys.executable, "launch/sweep.py", "--config=experiments/r1_zero.py",
           "--sweep=experiments/sweeps/grpo_variants.py", "--mode=print"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 10 and all(line.startswith("python launch/run.py") for line in lines)
    assert any("--config.grpo.loss.ratio_level=sequence" in line for line in lines)
