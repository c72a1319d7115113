"""The data and reward packages, evaluation's settings and estimators (which reward workers import)
and the sampling request are host code: importing them must not import jax."""
import subprocess
import sys


def test_no_jax_import():
    code = ("import sys, r1jax.data, r1jax.rewards, r1jax.rewards.sandbox, r1jax.sampling_request, "
            "r1jax.eval.estimators, r1jax.eval.settings\n"
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
