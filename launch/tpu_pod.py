"""Start one experiment on every host of a Cloud TPU VM slice (prints the commands; --execute runs).

    python launch/tpu_pod.py --tpu=r1zero-v5p --zone=us-east5-a --accelerator=v5p-64 \
        --config=experiments/r1_zero.py:model=qwen2.5-math-7b,ckpt=/gcs/models/Qwen2.5-Math-7B \
        --workdir=/gcs/runs/r1_zero_7b [--create] [--execute]

Steps: (create the slice), install r1jax on every worker, then run ``launch/run.py`` on every
worker at once; ``jax.distributed`` discovers the slice (R1JAX_DISTRIBUTED=auto). ``--workdir`` and
data paths must be on storage every host sees (a gcsfuse mount of a bucket, or Filestore): process
0 writes logs and reports, all processes write their checkpoint shards there.
"""
import shlex
import subprocess

from absl import app, flags

_TPU = flags.DEFINE_string("tpu", None, "TPU VM name")
_ZONE = flags.DEFINE_string("zone", None, "GCP zone")
_PROJECT = flags.DEFINE_string("project", None, "GCP project (default: gcloud's)")
_ACCELERATOR = flags.DEFINE_string("accelerator", "v5p-64", "accelerator type for --create")
_VERSION = flags.DEFINE_string("version", "v2-alpha-tpuv5", "TPU VM software version for --create")
_CONFIG = flags.DEFINE_string("config", None, "experiment file[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", None, "shared work directory")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "key=value config overrides")
_REPO = flags.DEFINE_string("repo", "https://github.com/r1jax/r1jax.git", "git repository")
_BRANCH = flags.DEFINE_string("branch", "main", "git branch")
_CREATE = flags.DEFINE_bool("create", False, "also create the slice")
_EXECUTE = flags.DEFINE_bool("execute", False, "run the commands instead of printing them")
flags.mark_flags_as_required(["tpu", "zone", "config", "workdir"])


def _gcloud(*args):
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", *args, f"--zone={_ZONE.value}"]
    return cmd + ([f"--project={_PROJECT.value}"] if _PROJECT.value else [])


def _on_all_workers(command: str):
    return _gcloud("ssh", _TPU.value, "--worker=all", f"--command={command}")


def commands() -> list[list[str]]:
    steps = []
    if _CREATE.value:
        steps.append(_gcloud("create", _TPU.value, f"--accelerator-type={_ACCELERATOR.value}",
                             f"--version={_VERSION.value}"))
    repo, branch = shlex.quote(_REPO.value), shlex.quote(_BRANCH.value)
    steps.append(_on_all_workers(
        f"(test -d r1jax || git clone --branch {branch} {repo} r1jax) && cd r1jax && "
        f"git fetch origin {branch} && git checkout -q FETCH_HEAD && "
        "pip install -q -e '.[tpu]'"))
    run = ["python", "launch/run.py", f"--config={_CONFIG.value}", f"--workdir={_WORKDIR.value}"]
    run += [f"--config.{o}" for o in _OVERRIDES.value]
    log = f'"{_WORKDIR.value}/host_$(hostname).log"'  # expanded on each worker
    steps.append(_on_all_workers(
        f"cd r1jax && R1JAX_DISTRIBUTED=auto nohup {shlex.join(run)} > {log} 2>&1 &"))
    return steps


def main(argv):
    del argv
    for cmd in commands():
        print(shlex.join(cmd))
        if _EXECUTE.value:
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    app.run(main)
