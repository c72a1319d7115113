"""DeepSeek-V3 end to end: logits parity with transformers' DeepseekV3ForCausalLM (torch CPU,
float32) on tiny random configs, Hugging Face round trips, FP8 checkpoints, the latent-cache decode
step and greedy rollouts against the full forward, the published presets' sizes, config errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from r1jax import hf, models, rollout
from r1jax.hf import fp8
from r1jax.models import decode
from r1jax.models.layers import rope_tables

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOKENS = np.array([[0, 0, 0, 5, 17, 33, 2, 9, 40, 11],
                   [7, 3, 12, 5, 8, 21, 60, 1, 4, 30],
                   [0, 0, 0, 0, 0, 0, 44, 45, 46, 47]])
MASK = (np.arange(10)[None] >= np.array([[3], [0], [6]])).astype(np.int64)
POSITIONS = np.maximum(np.cumsum(MASK, 1) - 1, 0)

COMMON = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
          "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
          "kv_lora_rank": 12, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 6,
          "moe_intermediate_size": 16, "n_routed_experts": 8, "num_experts_per_tok": 2,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
          "num_mtp_layers": 0}
KINDS = {
    # q LoRA, YaRN with mscale_all_dim, 4 groups (top 2), sigmoid + bias, a shared expert, the
    # first layer dense, normalized top-k, a routed scaling factor.
    "lora_yarn_groups": {
        "q_lora_rank": 16, "n_group": 4, "topk_group": 2, "n_shared_experts": 1,
        "first_k_dense_replace": 1, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0,
                            "original_max_position_embeddings": 64, "beta_fast": 32.0,
                            "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.8}},
    # No q LoRA, plain RoPE in the halves layout, biases, no groups, two shared experts, every
    # layer MoE, unnormalized top-k.
    "plain": {
        "q_lora_rank": None, "n_group": 1, "topk_group": 1, "n_shared_experts": 2,
        "first_k_dense_replace": 0, "norm_topk_prob": False, "routed_scaling_factor": 1.0,
        "attention_bias": True, "rope_interleave": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
}


def _torch_model(kind, seed=0):
    torch.manual_seed(seed)
    config = transformers.DeepseekV3Config(**COMMON, **KINDS[kind])
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p))
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):  # a nonzero bias, so that it changes the choice
                layer.mlp.gate.e_score_correction_bias.copy_(0.3 * torch.randn(8))
    return model


def _torch_logits(model, tokens=TOKENS, mask=MASK, positions=POSITIONS):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions))
    return out.logits.float().numpy()


def _masked_max_diff(a, b, mask=MASK):
    return float((np.abs(a - b) * mask[..., None]).max())


@pytest.fixture(scope="module", params=sorted(KINDS))
def checkpoint(request, tmp_path_factory):
    """A random transformers DeepseekV3 saved to disk, and r1jax's load of it."""
    path = tmp_path_factory.mktemp(request.param)
    model = _torch_model(request.param)
    model.save_pretrained(path)
    cfg, params = hf.load_pretrained(str(path))
    return request.param, path, model, cfg, params


@pytest.fixture(scope="module")
def tiny():
    """The tiny-deepseek preset (3 layers, not unrolled: faster to compile) with random weights
    large enough that every term matters, and its jitted logits."""
    cfg = models.get_config("tiny-deepseek", num_layers=3, scan_unroll=1)
    params = jax.jit(lambda r: models.init(cfg, r))(jax.random.key(0))
    params = jax.tree.map(lambda x: x * 8.0 if x.ndim >= 2 else x, params)
    bias = params["layers"]["moe"]["score_bias"]
    params["layers"]["moe"]["score_bias"] = 0.1 * jax.random.normal(jax.random.key(1), bias.shape)
    return cfg, params, jax.jit(lambda p, t, m: models.logits(cfg, p, t, m))


def test_config_reads_every_option(checkpoint):
    kind, _, _, cfg, _ = checkpoint
    assert cfg.model_type == "deepseek_v3" and cfg.is_mla and cfg.is_moe
    assert cfg.head_dim == cfg.qk_rope_head_dim == 8 and cfg.num_kv_heads == cfg.num_heads
    assert cfg.scoring == "sigmoid" and cfg.score_correction_bias
    if kind == "lora_yarn_groups":
        assert cfg.q_lora_rank == 16 and cfg.rope_scaling.mscale_all_dim == 0.8
        assert (cfg.n_group, cfg.topk_group, cfg.first_k_dense_replace) == (4, 2, 1)
        assert cfg.norm_topk_prob and cfg.routed_scaling_factor == 2.5
    else:
        assert cfg.q_lora_rank is None and cfg.rope_scaling is None and cfg.attention_bias
        assert cfg.n_shared_experts == 2 and not cfg.rope_interleave


def test_logits_match_transformers_batch_and_each_sequence_alone(checkpoint):
    _, _, model, cfg, params = checkpoint
    forward = jax.jit(lambda t, m: models.logits(cfg, params, t, m))
    ours = np.asarray(forward(jnp.asarray(TOKENS), jnp.asarray(MASK)))
    ref = _torch_logits(model)
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero numbers
    assert _masked_max_diff(ours, ref) <= 1e-4
    for tokens, mask in zip(TOKENS, MASK):
        seq = tokens[mask.astype(bool)][None]
        n = seq.shape[1]
        # Alone, no left padding; right-padded to one shape (one compile): causal attention
        # keeps the trailing pads out of the real tokens' logits.
        padded = np.pad(seq, ((0, 0), (0, TOKENS.shape[1] - n)))
        alone = np.asarray(forward(jnp.asarray(padded), jnp.asarray(padded * 0 + 1)))[:, :n]
        ref = _torch_logits(model, seq, np.ones_like(seq), np.arange(n)[None])
        assert np.abs(alone - ref).max() <= 1e-4


def test_score_bias_changes_the_routing(checkpoint):
    """Parity could hide a bias that is read but never used; show that it matters."""
    kind, _, _, cfg, params = checkpoint
    if kind != "lora_yarn_groups":
        pytest.skip("one config is enough")
    moe = params["layers"]["moe"]
    zeroed = {**params, "layers": {**params["layers"],
                                   "moe": {**moe, "score_bias": jnp.zeros_like(moe["score_bias"])}}}
    forward = jax.jit(lambda p: models.forward(cfg, p, jnp.asarray(TOKENS)))
    assert not np.array_equal(np.asarray(forward(params).moe_stats.expert_indices),
                              np.asarray(forward(zeroed).moe_stats.expert_indices))


def test_round_trip_through_transformers(checkpoint, tmp_path):
    """r1jax params → save_pretrained → transformers loads → same logits → load back identical."""
    _, _, _, cfg, params = checkpoint
    params = jax.tree.map(lambda x: x * 1.1, params)
    hf.save_pretrained(str(tmp_path), cfg, params, max_shard_bytes=60_000)
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ours = np.asarray(models.logits(cfg, params, jnp.asarray(TOKENS), jnp.asarray(MASK)))
    assert _masked_max_diff(ours, _torch_logits(torch_model)) <= 1e-4
    cfg2, params2 = hf.load_pretrained(str(tmp_path))
    assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_fp8_checkpoint_loads_dequantized(checkpoint, tmp_path):
    """DeepSeek's FP8 layout (float8 weights + block ``weight_scale_inv``, blocks cut short at
    the edges) loads to exactly the dequantized weights, and near the original ones."""
    kind, path, _, cfg, params = checkpoint
    if kind != "lora_yarn_groups":
        pytest.skip("one FP8 checkpoint is enough")
    tensors = dict(fp8.read_safetensors(str(path / "model.safetensors")))
    block = (16, 24)
    quantized = fp8.quantize_tensors(
        tensors, lambda n, a: a.ndim == 2 and "proj" in n, block)
    assert sum(n.endswith("_scale_inv") for n in quantized) > 10
    # The released checkpoints store the multi-token-prediction module as the layer after the
    # last (model.layers.61.*): skipped, as transformers does.
    quantized["model.layers.3.eh_proj.weight"] = np.ones((32, 64), np.float32)
    raw = json.loads((path / "config.json").read_text())
    for directory, weights, extra in (
            (tmp_path / "fp8", quantized, {"quantization_config": {
                "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": list(block)}}),
            (tmp_path / "dequantized", dict(fp8.dequantize_tensors(quantized, block)), {})):
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps({**raw, **extra}))
        save_file({n: np.ascontiguousarray(a) for n, a in weights.items()},
                  str(directory / "model.safetensors"), metadata={"format": "pt"})
    cfg_q, params_q = hf.load_pretrained(str(tmp_path / "fp8"))
    _, params_d = hf.load_pretrained(str(tmp_path / "dequantized"))
    assert cfg_q == cfg
    jax.tree.map(np.testing.assert_array_equal, params_q, params_d)
    q_b, orig = params_q["layers"]["attn"]["q_b_kernel"], params["layers"]["attn"]["q_b_kernel"]
    err = np.abs(np.asarray(q_b) - np.asarray(orig))
    assert 0 < err.max() <= 2 ** -4 * np.abs(np.asarray(orig)).max()


def test_decode_step_matches_full_forward(tiny):
    """Prefill into the latent cache, then the one-token decode step (absorbed up-projections)
    token by token: the logits of the full forward at every position."""
    cfg, params, logits_of = tiny
    tokens = jnp.asarray(TOKENS[:, :6] % cfg.vocab_size)
    mask = jnp.asarray(MASK[:, :6])
    prefill, total = 4, 6
    full = np.asarray(logits_of(params, tokens, mask))
    cache = models.init_cache(cfg, 3, prefill)
    assert isinstance(cache, models.LatentCache)
    assert cache.latents[0].shape == (3, prefill, cfg.kv_lora_rank)
    out = jax.jit(lambda p, t, m, c: models.forward(cfg, p, t, attention_mask_BxL=m, cache=c))(
        params, tokens[:, :prefill], mask[:, :prefill], cache)
    latents, rope_keys = decode.to_decode_cache(out.cache)
    latents, rope_keys = decode.grow_cache(latents, rope_keys, total)
    assert latents[0].shape == (3, total, cfg.kv_lora_rank)
    weights = decode.prepare_weights(cfg, params)
    valid = jnp.pad(out.cache.valid_BxS, ((0, 0), (0, total - prefill)))
    positions = out.cache.valid_BxS.sum(1)
    step = jax.jit(lambda t, rope, slot, valid, a, b: decode.decode_step(
        cfg, weights, t, rope, slot, valid, a, b))
    worst = 0.0
    for slot in range(prefill, total):
        valid = valid.at[:, slot].set(True)
        rope = rope_tables(cfg, positions + slot - prefill)
        logits, latents, rope_keys = step(tokens[:, slot], rope, slot, valid, latents, rope_keys)
        worst = max(worst, float(np.abs(np.asarray(logits) - full[:, slot]).max()))
    assert worst <= 1e-4


@pytest.mark.parametrize("unstack", [True, False])
def test_greedy_rollout_equals_teacher_forced_argmax(tiny, unstack):
    """The lockstep engine on the latent cache (CPU decode step, or models.forward's cached path)
    decodes greedily exactly what the full forward's argmax says."""
    cfg, params, logits_of = tiny
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
    out = rollout.generate(params, cfg, prompts, rng=jax.random.key(2), max_new_tokens=8,
                           temperature=0.0, unstack_params=unstack, group_size=2)
    tokens = np.asarray(out.tokens)
    assert len(set(tokens[0].tolist())) > 2  # not a degenerate repeat
    for row in range(tokens.shape[0]):
        prompt = prompts[row // 2]
        seq = jnp.asarray([prompt + tokens[row].tolist()])
        argmax = np.asarray(logits_of(params, seq, jnp.ones(seq.shape, jnp.int32))[0].argmax(-1))
        np.testing.assert_array_equal(tokens[row], argmax[len(prompt) - 1:-1])


@pytest.mark.parametrize("name, published", [("deepseek-v3", 671e9), ("deepseek-v2-lite", 15.7e9)])
def test_presets_have_published_sizes(name, published):
    """Shapes only (``eval_shape``): 671,026,419,200 and 15,706,484,224 parameters."""
    count = models.count_params(models.get_config(name))
    assert abs(count - published) / published < 0.002


def test_presets_round_trip_through_config_json():
    for name in ("tiny-deepseek", "deepseek-v3", "deepseek-v2-lite"):
        cfg = models.get_config(name)
        back = hf.config_from_dict(json.loads(json.dumps(hf.config_to_dict(cfg))))
        assert back == cfg.replace(scan_unroll=1)


@pytest.mark.parametrize("change, match", [
    ({"head_dim": 32}, "head_dim .* must equal qk_rope_head_dim"),
    ({"num_kv_heads": 2}, "num_kv_heads .* must equal num_heads"),
    ({"kv_lora_rank": 0}, "kv_lora_rank must be >= 1"),
    ({"q_lora_rank": 0}, "q_lora_rank must be >= 1, or None"),
    ({"qk_norm": True}, "qkv_bias/qk_norm do not exist in deepseek_v3"),
    ({"n_routed_experts": 0}, "needs n_routed_experts >= 1"),
    ({"model_type": "qwen3_moe", "qk_norm": True}, "Multi-head Latent Attention fields"),
])
def test_config_errors_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        models.get_config("tiny-deepseek", **change)


def test_hf_config_errors():
    raw = hf.config_to_dict(models.get_config("tiny-deepseek"))
    with pytest.raises(hf.CheckpointError, match="'num_key_value_heads' is 2"):
        hf.config_from_dict({**raw, "num_key_value_heads": 2}, "x/config.json")
    with pytest.raises(hf.CheckpointError, match="'scoring_func'/'topk_method'"):
        hf.config_from_dict({**raw, "topk_method": "group_limited_greedy"}, "x/config.json")
    with pytest.raises(hf.CheckpointError, match="missing key 'kv_lora_rank'"):
        hf.config_from_dict({k: v for k, v in raw.items() if k != "kv_lora_rank"})


def test_sharded_forward_equals_single_device(tiny):
    """MLA + DeepSeekMoE on 8 fake devices (data 2 × tensor 2 × expert 2): heads split over
    ``tensor``, the latent axes replicated, experts over ``expert``; the same logits."""
    from r1jax.sharding import Sharding, make_mesh

    cfg, params, logits_of = tiny
    tokens, mask = jnp.asarray(np.tile(TOKENS, (4, 1))[:8]), jnp.asarray(np.tile(MASK, (4, 1))[:8])
    sharding = Sharding(make_mesh({"data": 2, "tensor": 2, "expert": 2}))
    shardings = models.param_shardings(cfg, sharding)
    spec = jax.sharding.PartitionSpec
    assert shardings["layers"]["attn"]["q_b_kernel"].spec == spec(None, None, "tensor")
    assert shardings["layers"]["attn"]["kv_a_kernel"].spec == spec()
    sharded = jax.jit(lambda p: models.logits(cfg, p, tokens, mask, sharding=sharding),
                      in_shardings=(shardings,))(jax.device_put(params, shardings))
    expected = np.asarray(logits_of(params, tokens, mask))
    np.testing.assert_allclose(np.asarray(sharded), expected, atol=1e-4, rtol=1e-5)
