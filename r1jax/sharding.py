"""Meshes and the one table that maps logical axis names to mesh axes.

Every parameter and key activation carries logical axis names (``embed``, ``mlp``, ``heads``…);
``DEFAULT_RULES`` maps them onto the mesh axes ``data``, ``fsdp`` and ``tensor`` (and ``expert``,
for mixtures of experts). A logical name mapped to ``None`` is replicated.

The ``expert`` axis exists in a mesh only when its size is not 1, so every dense-model mesh is the
three-axis mesh it always was. On it, expert weights (logical ``exp``) are split by expert, and
the batch is split over it as over ``data`` (outside the expert layers it is data parallelism);
``r1jax.models.moe`` brings each token to its experts' devices and back.

Shapes are checked against the mesh: when a dimension does not divide by the mesh axes its rule
names (e.g. 2 KV heads on a ``tensor`` axis of 4), that dimension is replicated instead of failing
deep inside XLA, and a mesh axis is never used twice in one spec.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "expert")
# The order of the axes in a mesh: expert-parallel groups of neighbouring devices, tensor innermost.
_MESH_ORDER = ("data", "fsdp", "expert", "tensor")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Parameters use the plain names; activations use ``act_*`` names so that, under FSDP, weights are
# sharded on ``embed`` while activations keep ``embed`` whole and shard the batch instead.
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("cache_length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    # MLA's low-rank widths (q LoRA, KV latent): small, and split they would put an all-reduce
    # inside every attention score of the decode step.
    ("latent", None),
    ("exp", "expert"),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_vocab", "tensor"),
)


@dataclasses.dataclass(frozen=True)
class MeshSettings:
    """Mesh axis sizes from a config; one may be -1 (all remaining devices)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    expert: int = 1


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``(data, fsdp, tensor)``, plus ``expert`` when ``shape`` gives it a size other
    than 1; one entry of ``shape`` may be -1 (= the rest).

    ``make_mesh({"data": 2, "fsdp": 2, "tensor": 2})`` on 8 devices gives a 2×2×2 mesh.
    """
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
    devices = list(jax.devices() if devices is None else devices)
    axes = tuple(a for a in _MESH_ORDER if a != "expert" or int(shape.get(a, 1)) != 1)
    sizes = [int(shape.get(axis, 1)) for axis in axes]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(shape)}")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {dict(shape)}")
        sizes[sizes.index(-1)] = len(devices) // known
    if any(s < 1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive, got {dict(zip(axes, sizes))}")
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(axes, sizes))} needs {math.prod(sizes)} devices, "
            f"but {len(devices)} are available; set the sizes so their product is {len(devices)}"
        )
    try:
        grid = mesh_utils.create_device_mesh(sizes, devices)
    except Exception:  # noqa: BLE001 — fake CPU devices and odd topologies have no physical layout
        grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, axes)


def logical_to_spec(
    logical_axes: Sequence[str | None],
    rules: Rules,
    mesh: Mesh,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """The mesh ``PartitionSpec`` for an array annotated with ``logical_axes``.

    With ``shape`` given, a dimension whose size does not divide by its mesh axes is replicated.
    """
    table = dict(rules)
    used: set[str] = set()
    spec: list[Any] = []
    for dim, name in enumerate(logical_axes):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a in mesh.shape and a not in used and mesh.shape[a] > 1)
        if shape is not None and axes:
            # Keep the longest prefix of the named axes that divides this dimension.
            while axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
                axes = axes[:-1]
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


@dataclasses.dataclass(frozen=True)
class Sharding:
    """A mesh and its rules table: enough to place any logically annotated array."""

    mesh: Mesh
    rules: Rules = DEFAULT_RULES
    # Inside a ``shard_map`` manual over every mesh axis (the paged rollout's loop): the mesh
    # axes its rows are split over. Arrays are then local shards: ``constrain`` does nothing and
    # a mixture of experts exchanges tokens over ``expert`` with explicit collectives.
    manual_rows: tuple[str, ...] | None = None

    def inside_shard_map(self, row_axes: Sequence[str]) -> Sharding:
        """This sharding as seen inside a ``shard_map`` whose rows are split over ``row_axes``."""
        return dataclasses.replace(self, manual_rows=tuple(row_axes))

    def spec(self, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None):
        return logical_to_spec(logical_axes, self.rules, self.mesh, shape)

    def named(self, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None):
        return NamedSharding(self.mesh, self.spec(logical_axes, shape))

    def tree(self, logical_tree: Any, shapes_tree: Any) -> Any:
        """``NamedSharding`` for every leaf of a tree of logical specs, checked against shapes."""
        return jax.tree.map(
            lambda axes, x: self.named(tuple(axes), x.shape),
            logical_tree,
            shapes_tree,
            is_leaf=lambda a: isinstance(a, PartitionSpec),
        )

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def rows(self, batch_tree: Any) -> Any:
        """A batch's shardings: every leaf's rows over the batch axes, nothing else split."""
        return jax.tree.map(lambda x: self.named(("batch", "length")[:x.ndim], x.shape), batch_tree)


def constrain(x: jax.Array, logical_axes: Iterable[str | None], sharding: Sharding | None):
    """``with_sharding_constraint`` by logical names; a no-op without a mesh, or inside a
    ``shard_map`` (``Sharding.manual_rows``)."""
    if sharding is None or sharding.manual_rows is not None:
        return x
    return jax.lax.with_sharding_constraint(x, sharding.named(tuple(logical_axes), x.shape))


def logical_axes_of(boxed_tree: Any) -> Any:
    """Logical ``PartitionSpec``s of a tree built with ``nn.with_logical_partitioning``."""
    return nn.get_partition_spec(boxed_tree)
