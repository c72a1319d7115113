"""Ahead-of-time compilation of the TPU kernels with libtpu's real Mosaic compiler, on a CPU host.

``topologies.get_topology_desc`` yields v5e devices without hardware; ``jit(...).lower().compile()``
then runs Mosaic and XLA:TPU end to end, so tile shapes, layouts and VMEM limits are checked
for real, and ``memory_analysis()`` reports the HBM temporaries XLA would allocate.  Nothing runs.
Shapes are real LM heads at 32k completion tokens per chip (compiling costs the same at any N):
Qwen2.5-7B in bf16, and Qwen2.5-1.5B in f32 (f32 tiles take Mosaic ~4x longer to compile per D).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from kernels import grouped_advantages, token_logprobs

pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")

TOKENS_PER_CHIP = 32768
QWEN_7B_HEAD = (3584, 152064)  # (D, V)
QWEN_1_5B_HEAD = (1536, 151936)


@pytest.fixture(scope="module")
def mesh():
    from jax.experimental import topologies
    topology = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2")
    return Mesh(np.array(topology.devices), ("data",))


def _arg(mesh, shape, dtype, spec):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def compile_grpo_logprob_step(mesh, tokens_per_chip, head, dtype, impl):
    """Compiles value-and-grad of sum(logp * adv) + sum(entropy) with tokens sharded over chips.

    Pallas calls under a mesh must sit inside shard_map; the head's gradient is summed over chips.
    """
    def local(hidden_NxD, lm_head_DxV, targets_N, adv_N):
        def loss(h, w):
            logp_N, entropy_N = token_logprobs(h, w, targets_N, temperature=0.6,
                                               return_entropy=True, impl=impl)
            return jnp.sum(logp_N * adv_N) + 0.01 * jnp.sum(entropy_N)

        value, (d_hidden, d_lm_head) = jax.value_and_grad(loss, (0, 1))(hidden_NxD, lm_head_DxV)
        return jax.lax.psum(value, "data"), d_hidden, jax.lax.psum(d_lm_head, "data")

    step = jax.jit(jax.shard_map(
        local, mesh=mesh, in_specs=(P("data"), P(), P("data"), P("data")),
        out_specs=(P(), P("data"), P()), check_vma=False))
    n, (model_dim, vocab) = tokens_per_chip * mesh.size, head
    return step.lower(_arg(mesh, (n, model_dim), dtype, P("data")),
                      _arg(mesh, (model_dim, vocab), dtype, P()),
                      _arg(mesh, (n,), jnp.int32, P("data")),
                      _arg(mesh, (n,), jnp.float32, P("data"))).compile()


@pytest.mark.parametrize("dtype, head", [(jnp.bfloat16, QWEN_7B_HEAD),
                                         (jnp.float32, QWEN_1_5B_HEAD)], ids=["bf16", "f32"])
def test_pallas_tpu_forward_and_backward_compile_without_nxv_temporaries(mesh, dtype, head):
    compiled = compile_grpo_logprob_step(mesh, TOKENS_PER_CHIP, head, dtype, impl="pallas_tpu")
    hlo = compiled.as_text()
    for kernel in ("token_logprobs_fwd", "token_logprobs_bwd_dh", "token_logprobs_bwd_dw"):
        assert kernel in hlo, f"{kernel} is not in the compiled TPU program"
    logits_bytes = TOKENS_PER_CHIP * head[1] * 4  # one f32 N x V array per chip: ~18.6 GiB
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp <= logits_bytes / 50, f"temp {temp / 2**20:.0f} MiB per chip"


def test_reference_materializes_what_the_kernels_avoid(mesh):
    """The same measure on the reference, at a size it can compile, does see N x V x 4."""
    tokens, head = 2048, (512, 32768)
    reference = compile_grpo_logprob_step(mesh, tokens, head, jnp.bfloat16, impl="reference")
    assert reference.memory_analysis().temp_size_in_bytes >= tokens * head[1] * 4


def test_grouped_advantages_compiles_for_tpu(mesh):
    device_mesh = Mesh(np.array(mesh.devices[:1]), ("data",))
    f = jax.jit(lambda r, v: grouped_advantages(r, v, mode="grpo", impl="pallas_tpu"))
    compiled = f.lower(_arg(device_mesh, (1000, 16), jnp.float32, P()),
                       _arg(device_mesh, (1000, 16), jnp.bool_, P())).compile()
    assert "grouped_advantages" in compiled.as_text()
