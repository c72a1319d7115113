"""Start one experiment on every host of a Cloud TPU VM slice. Prints the commands; --execute runs them.

    # the code from your repository (pin --commit so that every worker runs the same one):
    python launch/tpu_pod.py --tpu=r1zero --zone=us-east5-a --repo=https://github.com/YOU/r1jax.git \
        --branch=main --config=experiments/r1_zero.py:model=qwen2.5-math-7b --workdir=/gcs/runs/7b
    # or a copy of this working tree (tracked and untracked files, .gitignore respected):
    python launch/tpu_pod.py --tpu=r1zero --zone=us-east5-a --copy_tree \
        --config=experiments/r1_zero.py:model=qwen2.5-math-7b --workdir=/gcs/runs/7b

Steps: (``--create``: create the slice), put the code on every worker (a fresh clone of
``--repo``, or the working tree packed here and copied with ``gcloud ... scp``), install it, then
start ``launch/run.py`` on every worker at once with ``R1JAX_DISTRIBUTED=auto``: ``jax.distributed``
finds the slice's hosts from the TPU metadata. ``--workdir`` and the data must be on storage every
host sees (a gcsfuse mount of a bucket, or Filestore): process 0 writes logs and reports, every
process writes its checkpoint shards there, and each worker's output goes to
``<workdir>/host_<hostname>.log``. Nothing has a default repository: the code is yours or this tree.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TPU VM software versions (``--version``) by accelerator generation, from the Cloud TPU docs.
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                    "v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
CODE_DIR = "r1jax"  # on each worker, under the login user's home


@dataclasses.dataclass(frozen=True)
class Pod:
    """What to start where. ``repo`` (with an optional ``branch`` and ``commit``) or
    ``copy_tree``: exactly one says where the code comes from."""

    tpu: str
    zone: str
    config: str
    workdir: str
    project: str | None = None
    overrides: tuple[str, ...] = ()
    repo: str | None = None
    branch: str | None = None
    commit: str | None = None
    copy_tree: bool = False
    archive: str | None = None  # the packed tree (default /tmp/r1jax_<tpu>.tar.gz)
    create: bool = False
    accelerator: str | None = None
    version: str | None = None

    def __post_init__(self):
        if bool(self.repo) == bool(self.copy_tree):
            raise ValueError("say where the code comes from: --repo=URL (your repository; "
                             "--branch and --commit optional) or --copy_tree (this working "
                             "tree, copied to every worker), one of them")
        if (self.branch or self.commit) and not self.repo:
            raise ValueError("--branch and --commit choose what to clone from --repo")
        if self.create and not self.accelerator:
            raise ValueError("--create needs --accelerator (e.g. v5p-64, v5litepod-16)")
        if self.create and not self.runtime_version:
            raise ValueError(f"no TPU VM software version known for {self.accelerator!r}; "
                             "pass --version")

    @property
    def runtime_version(self) -> str | None:
        if self.version:
            return self.version
        generation = (self.accelerator or "").split("-")[0]
        return RUNTIME_VERSIONS.get(generation)

    @property
    def archive_path(self) -> str:
        return self.archive or f"/tmp/r1jax_{self.tpu}.tar.gz"


def _gcloud(pod: Pod, *args: str) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", *args, f"--zone={pod.zone}"]
    return cmd + ([f"--project={pod.project}"] if pod.project else [])


def _on_all_workers(pod: Pod, command: str) -> list[str]:
    return _gcloud(pod, "ssh", pod.tpu, "--worker=all", f"--command={command}")


def run_command(pod: Pod) -> str:
    """What every worker runs: the experiment, in the background, its output in the workdir."""
    argv = ["python3", "launch/run.py", f"--config={pod.config}", f"--workdir={pod.workdir}"]
    argv += [f"--config.{o}" for o in pod.overrides]
    workdir = shlex.quote(pod.workdir)
    log = f'{workdir}/host_"$(hostname)".log'  # $(hostname) expands on each worker
    return (f"mkdir -p {workdir} && cd {CODE_DIR} && R1JAX_DISTRIBUTED=auto nohup "
            f"{shlex.join(argv)} > {log} 2>&1 < /dev/null &")


def commands(pod: Pod) -> list[str]:
    """The shell commands, in order: each a line to print, or to run here (``--execute``)."""
    steps = []
    if pod.create:
        steps.append(_gcloud(pod, "create", pod.tpu, f"--accelerator-type={pod.accelerator}",
                             f"--version={pod.runtime_version}"))
    install = f"cd {CODE_DIR} && python3 -m pip install -q -e '.[tpu]'"
    if pod.repo:
        clone = ["git", "clone", "-q"] + (["--branch", pod.branch] if pod.branch else [])
        checkout = f" && git -C {CODE_DIR} checkout -q {shlex.quote(pod.commit)}" \
            if pod.commit else ""
        steps.append(_on_all_workers(
            pod, f"rm -rf {CODE_DIR} && {shlex.join(clone + [pod.repo, CODE_DIR])}{checkout} && "
                 f"{install}"))
    else:
        archive = shlex.quote(pod.archive_path)
        # Run here, in the repository: the files git sees (tracked, and untracked but not ignored).
        # (bash: ``read -d ''``; tracked files deleted from the tree are left out.)
        steps.append(f"cd {shlex.quote(ROOT)} && git ls-files -z --cached --others "
                     "--exclude-standard | while IFS= read -r -d '' f; do [ -e \"$f\" ] && "
                     f"printf '%s\\0' \"$f\"; done | tar --null -T - -czf {archive}")
        steps.append(_gcloud(pod, "scp", pod.archive_path, f"{pod.tpu}:r1jax.tar.gz",
                             "--worker=all"))
        steps.append(_on_all_workers(
            pod, f"rm -rf {CODE_DIR} && mkdir {CODE_DIR} && tar -xzf r1jax.tar.gz -C {CODE_DIR} "
                 f"&& {install}"))
    steps.append(_on_all_workers(pod, run_command(pod)))
    return [s if isinstance(s, str) else shlex.join(s) for s in steps]


_TPU = flags.DEFINE_string("tpu", None, "TPU VM name")
_ZONE = flags.DEFINE_string("zone", None, "GCP zone")
_PROJECT = flags.DEFINE_string("project", None, "GCP project (default: gcloud's)")
_CONFIG = flags.DEFINE_string("config", None, "experiment file[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", None, "work directory on storage every host sees")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "key=value config overrides")
_REPO = flags.DEFINE_string("repo", None, "your git repository to clone on every worker")
_BRANCH = flags.DEFINE_string("branch", None, "branch of --repo (default: its default branch)")
_COMMIT = flags.DEFINE_string("commit", None, "commit of --repo to check out (pins the code)")
_COPY_TREE = flags.DEFINE_bool("copy_tree", False, "copy this working tree to every worker")
_ARCHIVE = flags.DEFINE_string("archive", None, "where to pack the tree (--copy_tree)")
_CREATE = flags.DEFINE_bool("create", False, "also create the slice")
_ACCELERATOR = flags.DEFINE_string("accelerator", None, "accelerator type for --create")
_VERSION = flags.DEFINE_string("version", None, "TPU VM software version for --create "
                               "(default: by generation)")
_EXECUTE = flags.DEFINE_bool("execute", False, "run the commands instead of printing them")
flags.mark_flags_as_required(["tpu", "zone", "config", "workdir"])


def main(argv):
    del argv
    try:
        pod = Pod(tpu=_TPU.value, zone=_ZONE.value, config=_CONFIG.value, workdir=_WORKDIR.value,
                  project=_PROJECT.value, overrides=tuple(_OVERRIDES.value), repo=_REPO.value,
                  branch=_BRANCH.value, commit=_COMMIT.value, copy_tree=_COPY_TREE.value,
                  archive=_ARCHIVE.value, create=_CREATE.value, accelerator=_ACCELERATOR.value,
                  version=_VERSION.value)
    except ValueError as e:
        sys.exit(f"launch/tpu_pod.py: {e}")
    for line in commands(pod):
        print(line, flush=True)
        if _EXECUTE.value:
            subprocess.run(["bash", "-c", line], check=True)


if __name__ == "__main__":
    app.run(main)
