"""Hugging Face I/O: logits parity with transformers (torch CPU, float32), round trips, bad input."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from r1jax import hf, models
from r1jax.sharding import Sharding, make_mesh

TOKENS = np.array([[0, 0, 0, 5, 17, 33, 2, 9, 40, 11],
                   [7, 3, 12, 5, 8, 21, 60, 1, 4, 30],
                   [0, 0, 0, 0, 0, 0, 44, 45, 46, 47]])
MASK = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
                 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                 [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]])
POSITIONS = np.maximum(np.cumsum(MASK, 1) - 1, 0)

COMMON = dict(vocab_size=71, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=128, rms_norm_eps=1e-6)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def _hf_config(kind):
    if kind == "qwen2":  # q/k/v bias, tied embeddings
        return transformers.Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=1000.0)
    if kind == "llama3":  # Llama-3 rope scaling, untied head
        return transformers.LlamaConfig(**COMMON, tie_word_embeddings=False, rope_theta=500.0,
                                        rope_scaling=dict(LLAMA3_ROPE))
    if kind == "qwen3":  # q/k RMSNorm
        return transformers.Qwen3Config(**COMMON, tie_word_embeddings=False, rope_theta=1000.0)
    if kind == "qwen3_moe":  # 8 experts top-2 (per-expert tensors), layer 0 dense, q/k RMSNorm
        return transformers.Qwen3MoeConfig(**COMMON, tie_word_embeddings=False, rope_theta=1000.0,
                                           num_experts=8, num_experts_per_tok=2,
                                           moe_intermediate_size=32, norm_topk_prob=True,
                                           decoder_sparse_step=1, mlp_only_layers=[0])
    raise ValueError(kind)


def _save_random_hf(kind, path, seed=0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(_hf_config(kind)).eval()
    with torch.no_grad():  # larger than the default init so that every term matters
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(path)
    return model


def _torch_logits(model, tokens=TOKENS, mask=MASK, positions=POSITIONS):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions))
    return out.logits.float().numpy()


def _masked_max_diff(a, b, mask=MASK):
    return float((np.abs(a - b) * mask[..., None]).max())


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "qwen3", "qwen3_moe"])
def test_logits_match_transformers_with_left_padding(kind, tmp_path):
    torch_model = _save_random_hf(kind, tmp_path)
    cfg, params = hf.load_pretrained(str(tmp_path))
    assert cfg.model_type == {"llama3": "llama"}.get(kind, kind)
    ours = np.asarray(models.logits(cfg, params, jnp.asarray(TOKENS), jnp.asarray(MASK)))
    ref = _torch_logits(torch_model)
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero numbers
    assert _masked_max_diff(ours, ref) <= 1e-4


def test_llama3_rope_scaling_is_applied(tmp_path):
    """Parity above could hide a no-op scaling if it changed nothing; show that it does."""
    _save_random_hf("llama3", tmp_path)
    cfg, params = hf.load_pretrained(str(tmp_path))
    assert cfg.rope_scaling is not None
    scaled = models.logits(cfg, params, jnp.asarray(TOKENS), jnp.asarray(MASK))
    plain = models.logits(cfg.replace(rope_scaling=None), params, jnp.asarray(TOKENS),
                          jnp.asarray(MASK))
    assert _masked_max_diff(np.asarray(scaled), np.asarray(plain)) > 1e-2


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "qwen3", "qwen3_moe"])
def test_round_trip_through_transformers(kind, tmp_path):
    """r1jax params → save_pretrained → transformers loads → the same logits; and back."""
    cfg = hf.config_from_dict(json.loads(_hf_config(kind).to_json_string()))
    params = jax.jit(lambda r: models.init(cfg, r))(jax.random.key(1))  # eager init is slow
    params = jax.tree.map(lambda x: x * 10.0 if x.ndim > 1 else x + 0.1, params)
    hf.save_pretrained(str(tmp_path), cfg, params, max_shard_bytes=40_000)
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")  # sharded on purpose
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ours = np.asarray(models.logits(cfg, params, jnp.asarray(TOKENS), jnp.asarray(MASK)))
    assert _masked_max_diff(ours, _torch_logits(torch_model)) <= 1e-4
    cfg2, params2 = hf.load_pretrained(str(tmp_path))
    assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_qwen3_moe_logits_match_transformers_for_each_sequence_alone(tmp_path):
    """Each row of the batch alone (no padding) against transformers, routing unnormalized."""
    torch.manual_seed(1)
    config = _hf_config("qwen3_moe")
    config.norm_topk_prob = False
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_pretrained(str(tmp_path))
    assert cfg.is_moe and not cfg.norm_topk_prob and cfg.first_k_dense_replace == 1
    forward = jax.jit(lambda t: models.logits(cfg, params, t))
    for tokens, mask in zip(TOKENS, MASK):
        seq = tokens[mask.astype(bool)][None]
        ours = np.asarray(forward(jnp.asarray(seq)))
        ref = _torch_logits(model, seq, np.ones_like(seq), np.arange(seq.shape[1])[None])
        assert np.abs(ours - ref).max() <= 1e-4


def test_qwen3_moe_dense_layers_must_come_first():
    raw = json.loads(_hf_config("qwen3_moe").to_json_string())
    assert hf.config_from_dict(raw).first_k_dense_replace == 1
    raw["mlp_only_layers"] = [1]
    with pytest.raises(hf.CheckpointError, match=r"make layers \[1\] dense"):
        hf.config_from_dict(raw, "x/config.json")


def test_sharded_load_places_each_tensor_and_matches(tmp_path):
    _save_random_hf("qwen2", tmp_path)
    cfg, params = hf.load_pretrained(str(tmp_path))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    cfg_s, params_s = hf.load_pretrained(str(tmp_path), mesh=mesh)
    expected = models.param_shardings(cfg, Sharding(mesh))
    q_kernel = params_s["layers"]["attn"]["q_kernel"]
    assert q_kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim) or pytest.fail(str(s)),
                 params_s, expected)
    jax.tree.map(np.testing.assert_array_equal, params_s, params)


def test_dtype_override_loads_bfloat16(tmp_path):
    _save_random_hf("qwen2", tmp_path)
    cfg, params = hf.load_pretrained(str(tmp_path), dtype="bfloat16")
    assert cfg.dtype == cfg.param_dtype == "bfloat16"
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    cfg32, params32 = hf.load_pretrained(str(tmp_path))
    low = models.logits(cfg, params, jnp.asarray(TOKENS), jnp.asarray(MASK))
    high = models.logits(cfg32, params32, jnp.asarray(TOKENS), jnp.asarray(MASK))
    assert low.dtype == jnp.float32
    scale = float(np.abs(np.asarray(high)).max())
    assert _masked_max_diff(np.asarray(low), np.asarray(high)) < 0.05 * scale


# ---------------------------------------------------------------- bad input: clear, named errors


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.load_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load_pretrained(str(tmp_path))


def test_unknown_model_type_names_file_and_key(tmp_path):
    _save_random_hf("qwen2", tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(hf.CheckpointError, match=r"config.json: key 'model_type' is 'gpt2'"):
        hf.load_pretrained(str(tmp_path))


def test_missing_tensor_is_an_error_not_a_zero(tmp_path):
    _save_random_hf("llama3", tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError, match=r"model.layers.1.mlp.up_proj.weight.*missing"):
        hf.load_pretrained(str(tmp_path))


def test_shape_disagreeing_with_config(tmp_path):
    _save_random_hf("qwen2", tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["intermediate_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(hf.CheckpointError, match=r"model.safetensors: tensor 'model.layers.0.mlp"
                                                  r".*shape \[96, 64\].*implies \[128, 64\]"):
        hf.load_pretrained(str(tmp_path))


def test_index_listing_a_missing_shard(tmp_path):
    cfg = hf.config_from_dict(json.loads(_hf_config("qwen2").to_json_string()))
    hf.save_pretrained(str(tmp_path), cfg, models.init(cfg, jax.random.key(0)),
                       max_shard_bytes=40_000)
    shard = sorted(p for p in os.listdir(tmp_path) if p.startswith("model-"))[1]
    os.remove(tmp_path / shard)
    with pytest.raises(FileNotFoundError, match=f"lists shard '{shard}'"):
        hf.load_pretrained(str(tmp_path))


def test_no_weights_at_all(tmp_path):
    _save_random_hf("qwen2", tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="safetensors checkpoints only"):
        hf.load_pretrained(str(tmp_path))


def test_unexpected_tensor_is_refused(tmp_path):
    _save_random_hf("llama3", tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(64, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError, match="o_proj.bias"):
        hf.load_pretrained(str(tmp_path))


def test_unsupported_rope_type(tmp_path):
    raw = json.loads(_hf_config("llama3").to_json_string())
    raw["rope_scaling"] = raw["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0}
    with pytest.raises(hf.CheckpointError, match="rope type 'yarn'"):
        hf.config_from_dict(raw, "x/config.json")
