"""Read and write Hugging Face safetensors checkpoints (single file or sharded with an index).

Loading never builds a full host copy of the model: each device's slice of each parameter is read
straight from the memory-mapped safetensors file by ``jax.make_array_from_callback``, in the layout
the mesh and rules table give it. Saving writes one shard at a time, from process 0.

DeepSeek-V3/R1's FP8 checkpoints (``quantization_config`` in config.json) are read through
``fp8.read_safetensors`` instead: each float8 weight is dequantized with its ``weight_scale_inv``
when first read (``fp8.dequantize_fp8``, one tensor at a time), the scales themselves dropped.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from safetensors import safe_open
from safetensors.numpy import save_file

from r1jax.hf import fp8
from r1jax.hf.config_io import load_config, save_config
from r1jax.hf.errors import CheckpointError
from r1jax.hf.tensor_map import TensorMap, ignorable, tensor_maps
from r1jax.models import ModelConfig, param_shardings
from r1jax.sharding import DEFAULT_RULES, Rules, Sharding

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


def _weight_files(checkpoint_dir: str) -> dict[str, str]:
    """Map every tensor name to the file holding it, checking that every listed file exists."""
    index_path = os.path.join(checkpoint_dir, INDEX_FILE)
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index_path}: expected JSON with a 'weight_map' ({e!r})") from None
        for file in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(checkpoint_dir, file)):
                raise FileNotFoundError(
                    f"{index_path}: lists shard {file!r}, which is missing from {checkpoint_dir}"
                )
        return {name: os.path.join(checkpoint_dir, file) for name, file in weight_map.items()}
    # Without an index, model.safetensors holds the weights; other files (a reward head, say) are
    # not the decoder's. Only when it is absent are all *.safetensors files read.
    files = sorted(f for f in os.listdir(checkpoint_dir) if f.endswith(".safetensors"))
    if SINGLE_FILE in files:
        files = [SINGLE_FILE]
    if not files:
        present = ", ".join(sorted(os.listdir(checkpoint_dir))) or "nothing"
        raise FileNotFoundError(
            f"{checkpoint_dir}: no {SINGLE_FILE} or {INDEX_FILE} (found: {present}); "
            "r1jax reads safetensors checkpoints only"
        )
    names: dict[str, str] = {}
    for file in files:
        path = os.path.join(checkpoint_dir, file)
        with safe_open(path, framework="np") as f:
            for name in f.keys():
                names[name] = path
    return names


def _param_at(params: Any, path: tuple[str, ...]):
    for key in path:
        params = params[key]
    return params


def _set_param(params: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        params = params.setdefault(key, {})
    params[path[-1]] = value


def _check_tensors(cfg: ModelConfig, maps: list[TensorMap], files: dict[str, str],
                   handles: dict[str, Any]) -> None:
    """Every expected tensor present with the expected shape; nothing unknown left over."""
    expected = set()
    for m in maps:
        for name in m.hf_names(cfg.num_layers):
            expected.add(name)
            if name not in files:
                raise CheckpointError(
                    f"tensor {name!r} (r1jax {'/'.join(m.path)}) is missing from the checkpoint "
                    f"files {sorted(set(files.values()))}; expected shape {list(m.hf_shape)}"
                )
            shape = tuple(handles[files[name]].get_slice(name).get_shape())
            if shape != m.hf_shape:
                raise CheckpointError(
                    f"{files[name]}: tensor {name!r} has shape {list(shape)}, but config.json "
                    f"implies {list(m.hf_shape)}"
                )
    unknown = sorted(n for n in files if n not in expected and not ignorable(n, cfg))
    if unknown:
        raise CheckpointError(
            f"{files[unknown[0]]}: tensors the {cfg.model_type} decoder has no place for, e.g. "
            f"{unknown[:5]}; refusing to drop weights silently"
        )


def load_pretrained(
    path: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dtype: str | None = None,
    rules: Rules = DEFAULT_RULES,
) -> tuple[ModelConfig, Any]:
    """Read ``config.json`` and the safetensors weights of a Hugging Face checkpoint directory.

    With ``mesh``, each parameter is placed in its sharded layout (by ``rules``) as it is read;
    without, on the default device. ``dtype`` (e.g. ``"bfloat16"``) overrides the stored dtype.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
    cfg = load_config(path, dtype)
    maps = tensor_maps(cfg)
    files = _weight_files(path)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        block = fp8.block_size_of(json.load(f))
    if block is not None:
        files = {n: f for n, f in files.items() if not n.endswith(fp8.SCALE_SUFFIX)}
    if mesh is not None:
        shardings = param_shardings(cfg, Sharding(mesh, rules))
    else:
        single_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    np_dtype = np.dtype(jnp.dtype(cfg.param_dtype))
    params: dict = {}
    with contextlib.ExitStack() as stack:
        if block is None:
            handles = {f: stack.enter_context(safe_open(f, framework="np"))
                       for f in sorted(set(files.values()))}
        else:
            handles = {f: _DequantizingReader(f, block) for f in sorted(set(files.values()))}
        _check_tensors(cfg, maps, files, handles)
        for m in maps:
            names = m.hf_names(cfg.num_layers)
            slices = [handles[files[n]].get_slice(n) for n in names]
            lead = m.lead_shape(cfg.num_layers)
            sharding = single_device if mesh is None else _param_at(shardings, m.path)
            # The score-correction bias stays float32 whatever the weights' dtype (as at init).
            kind = np.dtype(np.float32) if m.path[-1] == "score_bias" else np_dtype
            _set_param(params, m.path, _read_sharded(m, slices, lead, sharding, kind))
    return cfg, params


class _DequantizingReader:
    """``safe_open``'s ``get_slice`` over an FP8 safetensors file: float8 weights come back
    dequantized (by ``block``; a scale in a file of its own is not supported), others as stored."""

    def __init__(self, file: str, block: tuple[int, int]):
        self.tensors, self.block = fp8.read_safetensors(file), block
        self.last: tuple[str, np.ndarray] | None = None  # a tensor's regions are read in a row

    def get_slice(self, name: str):
        return _Lazy(self, name)

    def array(self, name: str) -> np.ndarray:
        if self.last is None or self.last[0] != name:
            self.last = (name, self._read(name))
        return self.last[1]

    def _read(self, name: str) -> np.ndarray:
        weight, scale = self.tensors[name], self.tensors.get(name + fp8.SCALE_SUFFIX)
        if scale is not None:
            return fp8.dequantize_fp8(weight, scale, self.block, np.float32, name)
        if weight.dtype == fp8.FP8_DTYPE:
            raise CheckpointError(f"{name} is float8_e4m3fn but has no {name}{fp8.SCALE_SUFFIX} "
                                  "in its file to dequantize it with")
        return weight


class _Lazy:
    def __init__(self, reader: _DequantizingReader, name: str):
        self.reader, self.name = reader, name

    def get_shape(self):
        return list(self.reader.tensors[self.name].shape)

    def __getitem__(self, index):
        return self.reader.array(self.name)[index]


def _read_sharded(m: TensorMap, slices: list, lead: tuple[int, ...], sharding, np_dtype
                  ) -> jax.Array:
    """The parameter of ``m``: its ``lead`` axes (layers, experts) index into ``slices`` (one
    HF tensor each, row-major), the rest are each tensor's r1jax-layout view."""
    seen: dict[tuple, np.ndarray] = {}  # replicated shards: read each distinct region once
    shape = (*lead, *m.shape)
    strides = [int(np.prod(lead[d + 1:])) for d in range(len(lead))]

    def read(index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (len(shape) - len(index))
        key = tuple(s.indices(d) for s, d in zip(index, shape))
        if key not in seen:
            ranges = [range(*index[d].indices(lead[d])) for d in range(len(lead))]
            parts = [m.read(slices[sum(i * s for i, s in zip(at, strides))], index[len(lead):])
                     for at in itertools.product(*ranges)]
            region = np.stack(parts).reshape(*map(len, ranges), *parts[0].shape)
            seen[key] = region.astype(np_dtype, copy=False)
        return seen[key]

    return jax.make_array_from_callback(shape, sharding, read)


def _fetch(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _hf_tensors(cfg: ModelConfig) -> Iterator[tuple[str, TensorMap, tuple[int, ...]]]:
    """Every HF tensor, its map, and its index into the parameter's lead (layer, expert) axes."""
    for m in tensor_maps(cfg):
        lead = m.lead_shape(cfg.num_layers)
        yield from zip(m.hf_names(cfg.num_layers), itertools.repeat(m),
                       itertools.product(*map(range, lead)))


def save_pretrained(path: str, cfg: ModelConfig, params: Any, *,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Write ``config.json`` and safetensors weights that ``transformers`` loads.

    Tensors are written in the parameters' dtype; more than ``max_shard_bytes`` of weights are split
    into ``model-0000k-of-0000n.safetensors`` files with an index. Every process must call this
    (sharded parameters are gathered collectively); only process 0 writes.
    """
    writer = jax.process_index() == 0
    entries = list(_hf_tensors(cfg))
    shards: list[list[tuple[str, TensorMap, tuple[int, ...]]]] = [[]]
    size = 0
    for entry in entries:
        m = entry[1]
        nbytes = int(np.prod(m.hf_shape)) * _param_at(params, m.path).dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    if writer:
        os.makedirs(path, exist_ok=True)
        save_config(path, cfg)
    files = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    weight_map, total = {}, 0
    # One layer of a parameter on the host at a time; its experts are sliced there (slicing each
    # expert out of the device array would compile and run one gather per expert).
    host: dict[tuple, np.ndarray] = {}
    for file, shard in zip(files, shards):
        tensors = {}
        for name, m, at in shard:
            key = (m.path, at[:1])
            if key not in host:
                host.clear()
                value = _param_at(params, m.path)
                host[key] = _fetch(value[at[0]] if at else value)
            tensors[name] = m.to_hf(host[key][at[1:]])
            weight_map[name] = file
            total += tensors[name].nbytes
        if writer:
            tmp = os.path.join(path, file + ".tmp")
            save_file(tensors, tmp, metadata={"format": "pt"})
            os.replace(tmp, os.path.join(path, file))
    if writer and len(files) > 1:
        with open(os.path.join(path, INDEX_FILE), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
