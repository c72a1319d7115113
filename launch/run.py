"""Run an experiment: ``python launch/run.py --config=experiments/r1_zero.py[:variant]``.

Overrides: ``--config.grpo.loss.beta=0.0``; work directory: ``--workdir=DIR`` (default
``runs/<experiment>``; rerunning the same command resumes there). ``--processes=N`` rehearses a
multi-process job (a TPU pod slice) on this machine: N processes of one ``jax.distributed`` job on
the CPU, ``--devices_per_process`` devices each (``r1jax.local_cluster``).
"""
import sys

from r1jax import platform

platform.configure()  # before jax loads; without a TPU, skips libtpu's probe and its error text

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from r1jax import local_cluster, pipeline  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "work directory (default: runs/<experiment>)")
_PROCESSES = flags.DEFINE_integer("processes", 1, "run as this many local processes of one job")
_DEVICES = flags.DEFINE_integer("devices_per_process", 1, "CPU devices of each local process")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
        logging.set_verbosity(logging.WARNING)
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    workdir = _WORKDIR.value or pipeline.default_workdir(spec)
    if _PROCESSES.value > 1 and not local_cluster.is_child():
        sys.exit(local_cluster.launch([sys.executable, *sys.argv], processes=_PROCESSES.value,
                                      devices_per_process=_DEVICES.value, log_dir=workdir))
    pipeline.run(_CONFIG.value, workdir)


if __name__ == "__main__":
    app.run(main)
