"""Where each r1jax parameter lives in a Hugging Face checkpoint, and how its layout differs.

A Hugging Face tensor is first viewed with some of its axes split (``q_proj.weight`` ``[H·E, D]`` →
``[H, E, D]``), then transposed by ``perm`` into the r1jax layout (``[D, H, E]``). Stacked
parameters gather one such tensor per layer along a leading ``layers`` axis; a MoE decoder's
experts, one Hugging Face tensor per expert (``mlp.experts.{e}.gate_proj.weight``: the layout of
the released Qwen3-MoE checkpoints, and the one transformers 5 writes), are gathered along an
expert axis after it. The same description serves reading only the slice a device needs and
writing whole tensors back.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from r1jax.models.config import ModelConfig
from r1jax.models.decoder import layer_stacks


@dataclasses.dataclass(frozen=True)
class TensorMap:
    path: tuple[str, ...]              # key path in the r1jax params tree
    hf_name: str                       # Hugging Face tensor name; '{i}' is the layer index
    groups: tuple[tuple[int, ...], ...]  # for each HF axis, the view axes it splits into
    perm: tuple[int, ...]              # r1jax axes = view axes transposed by this permutation
    stacked: bool = False
    first_layer: int = 0               # HF index of the stack's first layer
    stack_size: int | None = None      # layers in the stack (None: all of the model's)
    experts: int = 0                   # > 0: one HF tensor per expert ('{e}'), on an expert axis

    def lead_shape(self, num_layers: int) -> tuple[int, ...]:
        """The r1jax axes gathered from separate HF tensors: ``(layers?, experts?)``."""
        lead = (self.stack_size or num_layers,) if self.stacked else ()
        return lead + ((self.experts,) if self.experts else ())

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
        """The HF tensors in the row-major order of ``lead_shape``."""
        layers = [None]
        if self.stacked:
            layers = [self.first_layer + i for i in range(self.stack_size or num_layers)]
        experts = range(self.experts) if self.experts else [None]
        return [self.hf_name.format(i=i, e=e) for i in layers for e in experts]

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
    D, V = cfg.hidden_size, cfg.vocab_size
    maps = [
        TensorMap(("embedding",), "model.embed_tokens.weight", ((V,), (D,)), (0, 1)),
        TensorMap(("final_norm", "scale"), "model.norm.weight", ((D,),), (0,)),
    ]
    first = 0
    for key, count, is_moe in layer_stacks(cfg):
        # A dense decoder's one stack keeps stack_size None: "all layers", as it always was.
        size = count if cfg.is_moe else None
        maps += _layer_maps(cfg, key, first, size, is_moe)
        first += count
    if not cfg.tie_embeddings:
        maps.append(TensorMap(("lm_head",), "lm_head.weight", ((V,), (D,)), (1, 0)))
    return maps


def _layer_maps(cfg: ModelConfig, key: str, first: int, size: int | None, is_moe: bool
                ) -> list[TensorMap]:
    """The maps of one stack of layers (params key ``key``, HF layers ``first …``)."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layer = "model.layers.{i}."

    def stacked(path, name, groups, perm, experts=0):
        return TensorMap((key, *path), layer + name, groups, perm, True, first, size, experts)

    maps = [
        stacked(("attn_norm", "scale"), "input_layernorm.weight", ((D,),), (0,)),
        stacked(("mlp_norm", "scale"), "post_attention_layernorm.weight", ((D,),), (0,)),
    ]
    if cfg.is_mla:
        maps += [stacked(*m) for m in _mla_maps(cfg)]
    else:
        maps += [
            stacked(("attn", "q_kernel"), "self_attn.q_proj.weight", ((H, E), (D,)), (2, 0, 1)),
            stacked(("attn", "k_kernel"), "self_attn.k_proj.weight", ((K, E), (D,)), (2, 0, 1)),
            stacked(("attn", "v_kernel"), "self_attn.v_proj.weight", ((K, E), (D,)), (2, 0, 1)),
            stacked(("attn", "o_kernel"), "self_attn.o_proj.weight", ((D,), (H, E)), (1, 2, 0)),
        ]
    if is_moe:
        X, Fm = cfg.n_routed_experts, cfg.moe_intermediate_size
        maps += [
            stacked(("moe", "router_kernel"), "mlp.gate.weight", ((X,), (D,)), (1, 0)),
            stacked(("moe", "gate_kernel"), "mlp.experts.{e}.gate_proj.weight", ((Fm,), (D,)),
                    (1, 0), X),
            stacked(("moe", "up_kernel"), "mlp.experts.{e}.up_proj.weight", ((Fm,), (D,)),
                    (1, 0), X),
            stacked(("moe", "down_kernel"), "mlp.experts.{e}.down_proj.weight", ((D,), (Fm,)),
                    (1, 0), X),
        ]
        if cfg.score_correction_bias:
            maps.append(stacked(("moe", "score_bias"), "mlp.gate.e_score_correction_bias",
                                ((X,),), (0,)))
        if cfg.n_shared_experts:
            Fs = cfg.n_shared_experts * Fm
            maps += [
                stacked(("moe", "shared_gate_kernel"), "mlp.shared_experts.gate_proj.weight",
                        ((Fs,), (D,)), (1, 0)),
                stacked(("moe", "shared_up_kernel"), "mlp.shared_experts.up_proj.weight",
                        ((Fs,), (D,)), (1, 0)),
                stacked(("moe", "shared_down_kernel"), "mlp.shared_experts.down_proj.weight",
                        ((D,), (Fs,)), (1, 0)),
            ]
    else:
        maps += [
            stacked(("mlp", "gate_kernel"), "mlp.gate_proj.weight", ((F,), (D,)), (1, 0)),
            stacked(("mlp", "up_kernel"), "mlp.up_proj.weight", ((F,), (D,)), (1, 0)),
            stacked(("mlp", "down_kernel"), "mlp.down_proj.weight", ((D,), (F,)), (1, 0)),
        ]
    if cfg.qkv_bias:
        for name, n in (("q", H), ("k", K), ("v", K)):
            maps.append(stacked(("attn", f"{name}_bias"), f"self_attn.{name}_proj.bias",
                                ((n, E),), (0, 1)))
    if cfg.qk_norm:
        for name in ("q", "k"):
            maps.append(stacked(("attn", f"{name}_norm", "scale"), f"self_attn.{name}_norm.weight",
                                ((E,),), (0,)))
    return maps


def _mla_maps(cfg: ModelConfig) -> list[tuple]:
    """``(path, HF name, groups, perm)`` of an MLA layer's attention (layout: ``models.mla``)."""
    D, H, R = cfg.hidden_size, cfg.num_heads, cfg.kv_lora_rank
    qk, C = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.kv_lora_rank + cfg.qk_rope_head_dim
    kv_b, Ev = cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.v_head_dim
    attn = "self_attn."
    if cfg.q_lora_rank is None:
        maps = [(("attn", "q_kernel"), attn + "q_proj.weight", ((H, qk), (D,)), (2, 0, 1))]
    else:
        Rq = cfg.q_lora_rank
        maps = [
            (("attn", "q_a_kernel"), attn + "q_a_proj.weight", ((Rq,), (D,)), (1, 0)),
            (("attn", "q_a_norm", "scale"), attn + "q_a_layernorm.weight", ((Rq,),), (0,)),
            (("attn", "q_b_kernel"), attn + "q_b_proj.weight", ((H, qk), (Rq,)), (2, 0, 1)),
        ]
        if cfg.attention_bias:
            maps.append((("attn", "q_a_bias"), attn + "q_a_proj.bias", ((Rq,),), (0,)))
    maps += [
        (("attn", "kv_a_kernel"), attn + "kv_a_proj_with_mqa.weight", ((C,), (D,)), (1, 0)),
        (("attn", "kv_a_norm", "scale"), attn + "kv_a_layernorm.weight", ((R,),), (0,)),
        (("attn", "kv_b_kernel"), attn + "kv_b_proj.weight", ((H, kv_b), (R,)), (2, 0, 1)),
        (("attn", "o_kernel"), attn + "o_proj.weight", ((D,), (H, Ev)), (1, 2, 0)),
    ]
    if cfg.attention_bias:
        maps += [(("attn", "kv_a_bias"), attn + "kv_a_proj_with_mqa.bias", ((C,),), (0,)),
                 (("attn", "o_bias"), attn + "o_proj.bias", ((D,),), (0,))]
    return maps


# Tensors a checkpoint may hold that carry no information the decoder needs.
def ignorable(name: str, cfg: ModelConfig) -> bool:
    if name.endswith("rotary_emb.inv_freq"):
        return True
    if cfg.is_mla and name.startswith("model.layers."):
        # DeepSeek-V3's multi-token-prediction module is stored as layers num_layers, … (layer
        # 61 of the released checkpoints); the decoder does not run it.
        return int(name.split(".")[2]) >= cfg.num_layers
    return cfg.tie_embeddings and name == "lm_head.weight"
