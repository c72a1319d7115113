"""Run an experiment: ``python launch/run.py --config=experiments/r1_zero.py[:variant]``.

Overrides: ``--config.grpo.loss.beta=0.0``; work directory: ``--workdir=DIR`` (default
``runs/<experiment>``; rerunning the same command resumes there).
"""
from r1jax import platform

platform.configure()  # before jax loads; without a TPU, skips libtpu's probe and its error text

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from r1jax import pipeline  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "work directory (default: runs/<experiment>)")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
        logging.set_verbosity(logging.WARNING)
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    pipeline.run(_CONFIG.value, _WORKDIR.value or pipeline.default_workdir(spec))


if __name__ == "__main__":
    app.run(main)
