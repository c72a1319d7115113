"""Where each r1jax parameter lives in a Hugging Face checkpoint, and how its layout differs.

A Hugging Face tensor is first viewed with some of its axes split (``q_proj.weight`` ``[H·E, D]`` →
``[H, E, D]``), then transposed by ``perm`` into the r1jax layout (``[D, H, E]``). Stacked
parameters gather one such tensor per layer along a leading ``layers`` axis. The same description
serves reading only the slice a device needs and writing whole tensors back.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from r1jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class TensorMap:
    path: tuple[str, ...]              # key path in the r1jax params tree
    hf_name: str                       # Hugging Face tensor name; '{i}' is the layer index
    groups: tuple[tuple[int, ...], ...]  # for each HF axis, the view axes it splits into
    perm: tuple[int, ...]              # r1jax axes = view axes transposed by this permutation
    stacked: bool = False

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return tuple(math.prod(g) for g in self.groups)

    @property
    def view_shape(self) -> tuple[int, ...]:
        return tuple(d for g in self.groups for d in g)

    @property
    def shape(self) -> tuple[int, ...]:
        """The r1jax shape of one layer's slice (without the ``layers`` axis)."""
        view = self.view_shape
        return tuple(view[p] for p in self.perm)

    def hf_names(self, num_layers: int) -> list[str]:
        return [self.hf_name.format(i=i) for i in range(num_layers)] if self.stacked else [
            self.hf_name]

    def read(self, tensor_slice, index: tuple[slice, ...]) -> np.ndarray:
        """Read the r1jax-layout region ``index`` (one layer) from a lazily sliceable HF tensor."""
        view_index: list[slice] = [slice(None)] * len(self.perm)
        for ours_axis, s in enumerate(index):
            view_index[self.perm[ours_axis]] = s
        hf_index, after = [], []
        axis = 0
        for group in self.groups:
            sub = [view_index[axis + k].indices(group[k]) for k in range(len(group))]
            (start, stop, step), inner = sub[0], math.prod(group[1:])
            if step != 1:
                raise ValueError("strided reads are not supported")
            # Read the rows covering the outer slice; inner slices apply after the reshape.
            hf_index.append(slice(start * inner, stop * inner))
            after.append((stop - start, [slice(*s) for s in sub[1:]], group[1:]))
            axis += len(group)
        region = np.asarray(tensor_slice[tuple(hf_index)])
        view_shape, sub_index = [], []
        for outer_len, inner_slices, inner_sizes in after:
            view_shape += [outer_len, *inner_sizes]
            sub_index += [slice(None), *inner_slices]
        region = region.reshape(view_shape)[tuple(sub_index)]
        return region.transpose(self.perm)

    def to_hf(self, layer_value: np.ndarray) -> np.ndarray:
        """One layer's r1jax-layout array in the Hugging Face layout."""
        view = np.transpose(layer_value, np.argsort(self.perm))
        return np.ascontiguousarray(view.reshape(self.hf_shape))


def tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
    """Every parameter of ``cfg``'s decoder and its Hugging Face counterpart."""
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layer = "model.layers.{i}."
    maps = [
        TensorMap(("embedding",), "model.embed_tokens.weight", ((V,), (D,)), (0, 1)),
        TensorMap(("final_norm", "scale"), "model.norm.weight", ((D,),), (0,)),
        TensorMap(("layers", "attn_norm", "scale"), layer + "input_layernorm.weight", ((D,),),
                  (0,), True),
        TensorMap(("layers", "mlp_norm", "scale"), layer + "post_attention_layernorm.weight",
                  ((D,),), (0,), True),
        TensorMap(("layers", "attn", "q_kernel"), layer + "self_attn.q_proj.weight",
                  ((H, E), (D,)), (2, 0, 1), True),
        TensorMap(("layers", "attn", "k_kernel"), layer + "self_attn.k_proj.weight",
                  ((K, E), (D,)), (2, 0, 1), True),
        TensorMap(("layers", "attn", "v_kernel"), layer + "self_attn.v_proj.weight",
                  ((K, E), (D,)), (2, 0, 1), True),
        TensorMap(("layers", "attn", "o_kernel"), layer + "self_attn.o_proj.weight",
                  ((D,), (H, E)), (1, 2, 0), True),
        TensorMap(("layers", "mlp", "gate_kernel"), layer + "mlp.gate_proj.weight",
                  ((F,), (D,)), (1, 0), True),
        TensorMap(("layers", "mlp", "up_kernel"), layer + "mlp.up_proj.weight",
                  ((F,), (D,)), (1, 0), True),
        TensorMap(("layers", "mlp", "down_kernel"), layer + "mlp.down_proj.weight",
                  ((D,), (F,)), (1, 0), True),
    ]
    if cfg.qkv_bias:
        for name, n in (("q", H), ("k", K), ("v", K)):
            maps.append(TensorMap(("layers", "attn", f"{name}_bias"),
                                  layer + f"self_attn.{name}_proj.bias", ((n, E),), (0, 1), True))
    if cfg.qk_norm:
        for name in ("q", "k"):
            maps.append(TensorMap(("layers", "attn", f"{name}_norm", "scale"),
                                  layer + f"self_attn.{name}_norm.weight", ((E,),), (0,), True))
    if not cfg.tie_embeddings:
        maps.append(TensorMap(("lm_head",), "lm_head.weight", ((V,), (D,)), (1, 0)))
    return maps


# Tensors a checkpoint may hold that carry no information the decoder needs.
def ignorable(name: str, cfg: ModelConfig) -> bool:
    if name.endswith("rotary_emb.inv_freq"):
        return True
    return cfg.tie_embeddings and name == "lm_head.weight"
