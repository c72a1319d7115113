"""Meshes, the logical rules table, and sharded forwards equal to the single-device forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from r1jax import models
from r1jax.sharding import DEFAULT_RULES, Sharding, logical_to_spec, make_mesh


def test_make_mesh_shapes_and_errors():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(make_mesh({"fsdp": -1, "tensor": 2}).shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    with pytest.raises(ValueError, match="needs 6 devices, but 8"):
        make_mesh({"data": 3, "tensor": 2})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        make_mesh({"model": 8})


def test_rules_map_names_and_fall_back_when_indivisible():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert logical_to_spec(("embed", "mlp"), DEFAULT_RULES, mesh, (64, 96)) == P("fsdp", "tensor")
    assert logical_to_spec(("batch", "length"), DEFAULT_RULES, mesh, (8, 5)) == P(("data", "fsdp"))
    # 2 rows cannot split over data×fsdp=4: keep the prefix that divides (data=2).
    assert logical_to_spec(("batch",), DEFAULT_RULES, mesh, (2,)) == P("data")
    # 3 KV heads cannot split over tensor=2: replicate that dimension.
    assert logical_to_spec(("embed", "kv_heads"), DEFAULT_RULES, mesh, (64, 3)) == P("fsdp")
    # A mesh axis is never used twice in one spec.
    rules = (("a", "tensor"), ("b", "tensor"))
    assert logical_to_spec(("a", "b"), rules, mesh, (4, 4)) == P("tensor")


CFG = models.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=True)


@pytest.mark.parametrize("mesh_shape", [{"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 8}])
def test_sharded_forward_equals_single_device(mesh_shape):
    rng = jax.random.key(0)
    params = jax.tree.map(lambda x: x * 5 if x.ndim > 1 else x, models.init(CFG, rng))
    tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, CFG.vocab_size)
    mask = jnp.ones((8, 12), jnp.int32).at[1, :4].set(0).at[6, :7].set(0)
    single = models.logits(CFG, params, tokens, mask)

    sharding = Sharding(make_mesh(mesh_shape))
    params_s = jax.device_put(params, models.param_shardings(CFG, sharding))
    batch_sharding = sharding.named(("batch", "length"), tokens.shape)
    fn = jax.jit(lambda p, t, m: models.logits(CFG, p, t, m, sharding=sharding),
                 in_shardings=(models.param_shardings(CFG, sharding), batch_sharding,
                               batch_sharding))
    sharded = fn(params_s, jax.device_put(tokens, batch_sharding), jax.device_put(mask,
                                                                                  batch_sharding))
    assert len(sharded.sharding.device_set) == 8
    # Tensor-parallel all-reduces sum in another order: allow float32 rounding at the logit scale.
    scale = float(np.abs(np.asarray(single)).max())
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5 * scale, rtol=0)


def test_init_sharded_creates_each_parameter_in_place():
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    params = models.init_sharded(CFG, jax.random.key(0), sharding)
    assert params["embedding"].sharding.spec == P("tensor", "fsdp")
    assert params["layers"]["mlp"]["down_kernel"].sharding.spec == P(None, "tensor", "fsdp")
    # Same values as the unsharded init (jitted too: eager and fused `normal * std` differ by 1 ulp).
    reference = jax.jit(lambda r: models.init(CFG, r))(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, params, reference)
