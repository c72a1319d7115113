"""Multi-host runtime: ``jax.distributed`` start-up, per-process host work, and who writes.

Every process runs the same program on the same global arrays. Host work on rows (decoding,
rewards, the sandbox) is split: each process takes ``host_rows`` of a batch and the results are
put back together with ``allgather`` (in process order, so every process sees the same list a
single process would have built). ``to_host`` reads a global array on every process, and
``like_rows`` places a host array (the same on every process) with a batch's sharding.

TPU pods, SLURM and Open MPI jobs are detected by JAX itself (``initialize()`` needs no
arguments there; ``R1JAX_DISTRIBUTED=auto`` asks for it where no environment variable shows the
cluster, as on Cloud TPU VMs); other clusters pass a coordinator address, the process count and
this process's id (or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).
On CPU the cross-process collectives use gloo, and each process runs its programs one at a time on
one thread (``PJRT_NPROC=1`` unless set, no asynchronous dispatch). Gloo matches collectives by
their order on each process, while XLA:CPU runs a program's independent thunks concurrently on its
thread pool: two all-reduces of one GRPO step (a loss sum and a gradient) could then start in one
order on one process and in the other order on the other, and under load they did ("collective
mismatch ... 64 vs 4", SIGABRT, in about one 2-process run in three on a loaded 2-core machine).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

_CLUSTER_ENV = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                "OMPI_COMM_WORLD_SIZE")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None


def _from_env(cfg: DistributedConfig) -> DistributedConfig:
    env = os.environ
    return DistributedConfig(
        coordinator_address=cfg.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS"),
        num_processes=cfg.num_processes or (int(env["JAX_NUM_PROCESSES"])
                                            if "JAX_NUM_PROCESSES" in env else None),
        process_id=cfg.process_id if cfg.process_id is not None else (
            int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None),
        local_device_ids=cfg.local_device_ids,
    )


_initialized = False


def initialize(cfg: DistributedConfig = DistributedConfig()) -> bool:
    """Join the job's processes; returns True if this is a multi-process run.

    A single process with no cluster in sight does nothing (so laptops and tests need no setup).
    Calling it again is a no-op.
    """
    global _initialized
    if _initialized:
        return jax.process_count() > 1
    cfg = _from_env(cfg)
    explicit = cfg.coordinator_address is not None
    detected = any(os.environ.get(k) for k in _CLUSTER_ENV) or \
        os.environ.get("R1JAX_DISTRIBUTED") == "auto"
    if os.environ.get("SLURM_NTASKS") == "1":
        detected = False
    if not explicit and not detected:
        _initialized = True
        return False
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        os.environ.setdefault("PJRT_NPROC", "1")
    kwargs: dict[str, Any] = {}
    if explicit:
        if cfg.num_processes is None or cfg.process_id is None:
            raise ValueError("a coordinator address needs num_processes and process_id too "
                             "(or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
        kwargs = dict(coordinator_address=cfg.coordinator_address,
                      num_processes=cfg.num_processes, process_id=cfg.process_id)
    if cfg.local_device_ids is not None:
        kwargs["local_device_ids"] = list(cfg.local_device_ids)
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return jax.process_count() > 1


def is_main_process() -> bool:
    """Only process 0 writes logs, metrics and reports."""
    return jax.process_index() == 0


def host_rows(total: int) -> slice:
    """This process's share of ``total`` rows for host work (contiguous, as equal as can be)."""
    count, index = jax.process_count(), jax.process_index()
    return slice(index * total // count, (index + 1) * total // count)


def allgather(items: list) -> list:
    """Every process's ``items`` (picklable), concatenated in process order, on every process."""
    if jax.process_count() == 1:
        return list(items)
    import pickle

    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(list(items)), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int64))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    gathered = multihost_utils.process_allgather(padded)
    out = []
    for row, size in zip(gathered, sizes.reshape(-1)):
        out += pickle.loads(row[:int(size)].tobytes())
    return out


def to_host(x: Any) -> np.ndarray:
    """The whole value of ``x`` as numpy, on every process (a global array is gathered)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def like_rows(value: np.ndarray, reference: Any) -> Any:
    """``value`` (identical on every process) as a device array whose rows are laid out like
    ``reference``'s (a global array sharded over its first axis); a plain array otherwise."""
    import jax.numpy as jnp

    sharding = getattr(reference, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return jnp.asarray(value)
    rows = sharding.spec[0] if len(sharding.spec) else None
    spec = jax.sharding.PartitionSpec(rows, *([None] * (np.ndim(value) - 1)))
    return jax.device_put(value, jax.sharding.NamedSharding(sharding.mesh, spec))


def global_batch(local_tree: Any, shardings: Any) -> Any:
    """Assemble global arrays from each process's rows (``make_array_from_process_local_data``)."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)), local_tree,
        shardings)
