"""launch/tpu_pod.py: the commands it prints (and, with a stand-in gcloud, runs) for a TPU slice.

Nothing here reaches a real TPU or Google Cloud: the printed commands are parsed as the shell and
gcloud would parse them, and --execute runs against a fake ``gcloud`` that records its arguments.
"""
import os
import shlex
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--tpu=r1", "--zone=us-east5-a", "--config=experiments/r1_zero.py:model=qwen2.5-math-7b",
        "--workdir=/gcs/runs/r1"]
# An override with a space and a quote: it must reach launch/run.py as one argument, unchanged.
TRICKY = "data.template=it's r1 zero"


def _pod(*args, env=None):
    return subprocess.run([sys.executable, "launch/tpu_pod.py", *BASE, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)


def _lines(*args):
    done = _pod(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def _remote(line):
    """The command an ``ssh --worker=all`` line runs on every worker."""
    argv = shlex.split(line)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "r1"], argv
    assert "--worker=all" in argv and "--zone=us-east5-a" in argv
    (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
    subprocess.run(["bash", "-n", "-c", command], check=True)  # valid shell on the worker
    return command


def _check_run(line):
    command = _remote(line)
    assert command.startswith("mkdir -p /gcs/runs/r1 && cd r1jax && R1JAX_DISTRIBUTED=auto nohup ")
    head, log = command.split(" > ")
    run = shlex.split(head.split("nohup ", 1)[1])
    assert run == ["python3", "launch/run.py",
                   "--config=experiments/r1_zero.py:model=qwen2.5-math-7b",
                   "--workdir=/gcs/runs/r1", "--config.steps=10", f"--config.{TRICKY}"]
    # The log is named on each worker ($(hostname) unexpanded here); the job runs detached.
    assert log == '/gcs/runs/r1/host_"$(hostname)".log 2>&1 < /dev/null &'


def test_repo_and_branch_clone_on_every_worker_then_run():
    create, setup, run = _lines("--repo=https://example.com/me/r1jax.git", "--branch=grpo-7b",
                                "--commit=0123abcd", "--create", "--accelerator=v5p-64",
                                "--override=steps=10", f"--override={TRICKY}")
    assert shlex.split(create) == ["gcloud", "compute", "tpus", "tpu-vm", "create", "r1",
                                   "--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5",
                                   "--zone=us-east5-a"]
    assert _remote(setup) == (
        "rm -rf r1jax && git clone -q --branch grpo-7b https://example.com/me/r1jax.git r1jax "
        "&& git -C r1jax checkout -q 0123abcd && cd r1jax && python3 -m pip install -q -e "
        "'.[tpu]'")
    _check_run(run)


def test_repo_without_branch_takes_its_default_and_no_slice_is_created():
    setup, run = _lines("--repo=git@example.com:me/r1jax.git", "--override=steps=10",
                        f"--override={TRICKY}", "--project=my-project")
    assert "--project=my-project" in shlex.split(setup)
    assert _remote(setup).startswith("rm -rf r1jax && git clone -q git@example.com:me/r1jax.git "
                                     "r1jax && cd r1jax && python3 -m pip install")
    _check_run(run)


def test_working_tree_copy_packs_here_copies_to_every_worker_then_runs(tmp_path):
    archive = str(tmp_path / "tree.tar.gz")
    pack, scp, setup, run = _lines("--copy_tree", f"--archive={archive}", "--override=steps=10",
                                   f"--override={TRICKY}")
    assert "git ls-files" in pack and archive in pack
    assert shlex.split(scp) == ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive,
                                "r1:r1jax.tar.gz", "--worker=all", "--zone=us-east5-a"]
    assert _remote(setup) == ("rm -rf r1jax && mkdir r1jax && tar -xzf r1jax.tar.gz -C r1jax "
                              "&& cd r1jax && python3 -m pip install -q -e '.[tpu]'")
    _check_run(run)
    # The pack line, run as printed: the files git sees, nothing it ignores.
    subprocess.run(["bash", "-c", pack], check=True, timeout=120)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"setup.py", "launch/run.py", "launch/tpu_pod.py", "r1jax/__init__.py"} <= names
    assert not any(n.startswith((".venv/", "runs/")) or "__pycache__" in n for n in names)


def test_code_source_is_required_and_unambiguous():
    for args in ([], ["--repo=https://example.com/me/r1jax.git", "--copy_tree"],
                 ["--copy_tree", "--branch=main"]):
        done = _pod(*args)
        assert done.returncode != 0 and not done.stdout
        assert "--repo" in done.stderr and "launch/tpu_pod.py" in done.stderr, done.stderr
    done = _pod("--copy_tree", "--create")
    assert done.returncode != 0 and "--accelerator" in done.stderr
    # No made-up default anywhere: without --repo nothing is cloned from anywhere.
    assert "github.com" not in "".join(_lines("--copy_tree"))


def test_execute_runs_the_printed_commands_in_order(tmp_path):
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    archive = str(tmp_path / "tree.tar.gz")
    done = _pod("--copy_tree", f"--archive={archive}", "--execute", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.getsize(archive) > 0
    ran = calls.read_text().splitlines()
    assert [c.split()[:5] for c in ran] == [["compute", "tpus", "tpu-vm", "scp", archive]] + \
        [["compute", "tpus", "tpu-vm", "ssh", "r1"]] * 2
    assert "R1JAX_DISTRIBUTED=auto nohup python3 launch/run.py" in ran[-1]
