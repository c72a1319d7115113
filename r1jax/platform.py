"""Pick jax's platform before jax starts, so a machine without a TPU never loads libtpu.

Left to itself (no ``JAX_PLATFORMS``), jax tries every backend it knows, TPU included. Where libtpu
is installed (``jax[tpu]``, and r1jax's test extras) but no TPU is attached, that probe loads
libtpu, which prints an ``INVALID_ARGUMENT ... TPU_WORKER_HOSTNAMES`` error block to stderr (and
takes the machine-wide ``/tmp/libtpu_lockfile``) before jax quietly falls back to the CPU. The
launchers call :func:`configure` first thing; it sets ``JAX_PLATFORMS=cpu`` only where that is the
platform jax would have ended up with anyway:

* the user's own ``JAX_PLATFORMS`` (or the older ``JAX_PLATFORM_NAME``) always wins, even ``""``;
* without libtpu there is no message to avoid, so nothing changes (CUDA/ROCm installs included);
* a TPU host (``/dev/accel*``, ``/dev/vfio``, a Google TPU PCI device, or the TPU metadata
  variables that Cloud TPU VMs and GKE set) keeps jax's own choice, i.e. the TPU;
* so does any host where another accelerator may be present: NVIDIA/AMD device files, plugins
  named in ``PJRT_NAMES_AND_LIBRARY_PATHS``, or an installed jax plugin other than CUDA/ROCm
  (whose hardware the device files already account for).

Nothing here imports jax: the variable must be set before jax reads its configuration.
"""
import glob
import importlib.util
import os
import pkgutil
import re
import sys
from collections.abc import Mapping

_TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio")
_TPU_ENV = ("TPU_NAME", "TPU_WORKER_ID", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE",
            "TPU_TOPOLOGY", "TPU_HOST_BOUNDS", "TPU_CHIPS_PER_HOST_BOUNDS", "TPU_PROCESS_BOUNDS",
            "TPU_PROCESS_ADDRESSES", "TPU_VISIBLE_CHIPS", "TPU_VISIBLE_DEVICES",
            "CLOUD_TPU_TASK_ID", "JAX_FORCE_TPU_INIT")
_GOOGLE_PCI_VENDOR = "0x1ae0"
_GOOGLE_NON_TPU_PCI_DEVICES = ("0x0042",)  # gVNIC, the network card of many GCE CPU VMs
_GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def _tpu_present(environ: Mapping[str, str]) -> bool:
    if any(environ.get(k) for k in _TPU_ENV):
        return True
    if any(glob.glob(pattern) for pattern in _TPU_DEVICE_GLOBS):
        return True
    for vendor_file in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor_file) as f:
                if f.read().strip() != _GOOGLE_PCI_VENDOR:
                    continue
            with open(os.path.join(os.path.dirname(vendor_file), "device")) as f:
                if f.read().strip() not in _GOOGLE_NON_TPU_PCI_DEVICES:
                    return True
        except OSError:
            continue
    return False


def _jax_plugin_names() -> set[str]:
    """The jax plugins jax would discover: modules under ``jax_plugins`` and entry points."""
    from importlib.metadata import entry_points
    names = {ep.value for ep in entry_points(group="jax_plugins")}
    try:
        spec = importlib.util.find_spec("jax_plugins")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        names |= {m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)}
    return names


def _other_accelerator_possible(environ: Mapping[str, str]) -> bool:
    if any(os.path.exists(path) for path in _GPU_DEVICE_FILES):
        return True
    if environ.get("PJRT_NAMES_AND_LIBRARY_PATHS"):
        return True
    return any(not re.search("cuda|rocm", name) for name in _jax_plugin_names())


def _libtpu_installed(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("TPU_LIBRARY_PATH")) or importlib.util.find_spec("libtpu") is not None


def choose(environ: Mapping[str, str] = os.environ) -> str | None:
    """The ``JAX_PLATFORMS`` value to set in ``environ``, or None to leave jax's choice alone."""
    if "JAX_PLATFORMS" in environ or "JAX_PLATFORM_NAME" in environ:
        return None
    if not _libtpu_installed(environ) or _tpu_present(environ):
        return None
    if _other_accelerator_possible(environ):
        return None
    return "cpu"


def configure() -> str | None:
    """Call before anything imports jax: sets ``JAX_PLATFORMS=cpu`` where no TPU (nor any other
    accelerator) is attached, so jax skips the libtpu probe. Returns the value set, or None."""
    platforms = choose(os.environ)
    if platforms is not None:
        os.environ["JAX_PLATFORMS"] = platforms
        if "jax" in sys.modules:  # too late for the variable; the config still works until
            sys.modules["jax"].config.update("jax_platforms", platforms)  # backends start
    return platforms
