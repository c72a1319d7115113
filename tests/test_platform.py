"""r1jax.platform: without a TPU the launchers start quietly on the CPU (no libtpu probe and its
``TPU_WORKER_HOSTNAMES`` error block), while the user's JAX_PLATFORMS, TPU hosts and GPU hosts keep
jax's own choice."""
import json
import os
import subprocess
import sys

import pytest

from r1jax import platform

ROOT = os.path.join(os.path.dirname(__file__), "..")
LIBTPU_NOISE = ("TPU_WORKER_HOSTNAMES", "libtpu", "INVALID_ARGUMENT", "TPU_ACCELERATOR_TYPE",
                "InitGoogle")


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME", "XLA_FLAGS")}
    # Lets libtpu load even while another process holds its lock, so that without r1jax.platform
    # the probe would reliably print its error block here.
    env["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
    env.update(extra)
    return env


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


_ENV = _clean_env()
cpu_only_host = pytest.mark.skipif(
    platform._tpu_present(_ENV) or platform._other_accelerator_possible(_ENV),  # noqa: SLF001
    reason="this host has an accelerator: jax's own choice is kept, and is not the CPU")


@cpu_only_host
def test_launcher_starts_on_cpu_without_libtpu_noise():
    # launch/run.py's top (the platform choice and its imports) without running main, then what
    # the run does first: start jax's backends.
    code = ("import json, os, runpy\n"
            "runpy.run_path('launch/run.py', run_name='not_main')\n"
            "import jax\n"
            "print(json.dumps([os.environ.get('JAX_PLATFORMS'), jax.default_backend()]))\n")
    proc = _python(code, _clean_env())
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert not [s for s in LIBTPU_NOISE if s in output], output
    chosen, backend = json.loads(proc.stdout.strip().splitlines()[-1])
    assert backend == "cpu"
    assert chosen == ("cpu" if platform._libtpu_installed(_ENV) else None)  # noqa: SLF001


@pytest.mark.parametrize("value", ["tpu", ""])
def test_users_jax_platforms_is_respected(value):
    code = ("import json, os\n"
            "from r1jax import platform\n"
            "chosen = platform.configure()\n"
            "import jax\n"  # jax reads the variable on import; backends are not started here
            "print(json.dumps([chosen, os.environ['JAX_PLATFORMS'], jax.config.jax_platforms]))\n")
    proc = _python(code, _clean_env(JAX_PLATFORMS=value))
    assert proc.returncode == 0, proc.stderr
    chosen, env_value, config_value = json.loads(proc.stdout.strip().splitlines()[-1])
    assert chosen is None and env_value == value and (config_value or "") == value


def test_choice_keeps_jax_default_on_tpu_and_gpu_hosts(monkeypatch, tmp_path):
    assert platform.choose({"JAX_PLATFORMS": "tpu"}) is None
    assert platform.choose({"JAX_PLATFORMS": ""}) is None
    assert platform.choose({"JAX_PLATFORM_NAME": "gpu"}) is None
    # Cloud TPU VM / GKE metadata variables.
    assert platform.choose({"TPU_WORKER_ID": "0"}) is None
    assert platform.choose({"TPU_ACCELERATOR_TYPE": "v5litepod-8"}) is None
    monkeypatch.setattr(platform, "_libtpu_installed", lambda environ: True)
    device = tmp_path / "device"
    device.touch()
    monkeypatch.setattr(platform, "_TPU_DEVICE_GLOBS", (str(tmp_path / "dev*"),))  # /dev/accel0
    assert platform.choose({}) is None
    monkeypatch.setattr(platform, "_TPU_DEVICE_GLOBS", ())
    monkeypatch.setattr(platform, "_GPU_DEVICE_FILES", (str(device),))  # /dev/nvidia0
    assert platform.choose({}) is None
    monkeypatch.setattr(platform, "_GPU_DEVICE_FILES", ())
    assert platform.choose({"PJRT_NAMES_AND_LIBRARY_PATHS": "mine:/x.so"}) is None
    monkeypatch.setattr(platform, "_jax_plugin_names", lambda: {"jax_plugins.xla_cuda12"})
    monkeypatch.setattr(platform, "_tpu_present", lambda environ: False)
    assert platform.choose({}) == "cpu"  # a CUDA plugin without a GPU: jax would pick the CPU
    monkeypatch.setattr(platform, "_jax_plugin_names", lambda: {"jax_plugins.some_accelerator"})
    assert platform.choose({}) is None
    monkeypatch.setattr(platform, "_jax_plugin_names", lambda: set())
    monkeypatch.setattr(platform, "_libtpu_installed", lambda environ: False)
    assert platform.choose({}) is None  # no libtpu (e.g. a CUDA install): nothing to quiet
