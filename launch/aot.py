"""Check that an experiment fits a TPU slice before renting it (compiles on this host, runs nothing).

    python launch/aot.py --config=experiments/r1_zero.py:model=qwen2.5-math-7b --topology=v5p:4x4x2

Prints each chip's bytes for the GRPO update and the rollout, and whether they fit in HBM.
"""
import os

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the TPU is described, not used
# libtpu takes a machine-wide lock when loaded; only compiling here, we need not hold it (and
# must not fail because another process, e.g. a test run or a second check, already does).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from r1jax.configdict import from_config  # noqa: E402
from r1jax.rl import aot  # noqa: E402
from r1jax.rl.run_config import RunConfig  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:variant]",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:4x4, v5p:4x4x4")
_ROLLOUT = flags.DEFINE_bool("rollout", True, "also compile the rollout (KV cache) program")
_JSON = flags.DEFINE_string("json", None, "also write the report as JSON here")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    report = aot.compile_for_topology(from_config(RunConfig, _CONFIG.value), _TOPOLOGY.value,
                                      rollout=_ROLLOUT.value)
    print(report.table())
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            f.write(aot.report_json(report))


if __name__ == "__main__":
    app.run(main)
