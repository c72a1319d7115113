"""Check that an experiment fits a TPU slice before renting it (compiles on this host, runs nothing).

    python launch/aot.py --config=experiments/r1_zero.py:model=qwen2.5-math-7b --topology=v5p:4x4x2

Compiles every program a GRPO step runs (rollout, old/reference log-probs when the run needs them,
the update, the held-out evaluation's rollout) for the topology, and prints each chip's bytes
phase by phase, counting what stays resident between programs (optimizer state, reference copy,
the rollout and the update batch), the peak, and whether it fits in HBM. A run whose budgets the
model cannot hold (prompt + new tokens past its positions) is refused before anything compiles,
as the run would refuse it at start-up. Exit status: 0 fits, 1 refused or a program does not compile, 2 does not fit.
It also prints how long each program took to compile here: a 16-30B mixture of experts' programs
took 1.5-10 minutes each on 2 CPU cores, alone or shared (``--programs=`` compiles a subset).
"""
import os
import sys

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
_PROGRAMS = flags.DEFINE_list("programs", None, "compile only these of the run's programs "
                               f"({', '.join(aot.PHASES)}); default: all it runs")
_MARKDOWN = flags.DEFINE_bool("markdown", False, "print the phases as a Markdown table too")
_JSON = flags.DEFINE_string("json", None, "also write the report as JSON here")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    try:
        report = aot.compile_for_topology(from_config(RunConfig, _CONFIG.value), _TOPOLOGY.value,
                                          programs=_PROGRAMS.value)
    except aot.BudgetError as e:
        print(f"launch/aot.py: refused before compiling: {e}", file=sys.stderr)
        sys.exit(1)
    except aot.CompileError as e:
        print(f"launch/aot.py: {e}", file=sys.stderr)
        sys.exit(1)
    print(report.table())
    if _MARKDOWN.value:
        print()
        print(report.markdown())
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            f.write(aot.report_json(report))
    if report.fits() is False:
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
