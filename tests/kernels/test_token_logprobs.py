"""token_logprobs: every impl against a float64 numpy oracle, values and gradients.

The oracle materializes the logits in float64.  Its gradient formula is itself checked against
central finite differences, so the kernels are compared with something independent of them.
Pallas kernels run with ``interpret=True`` (the HLO interpreter) and in TPU interpret mode
(simulated VMEM and two cores, race detector on; see conftest.py).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import LogprobBlockSizes, token_logprobs
from kernels.logprobs import resolve_impl

F32_TOL = 5e-5  # of max |oracle|, per output
BF16_TOL = 1e-2

# Small tiles so the tests cross block edges: 128 is the smallest TPU lane tile.
TPU_BLOCKS = LogprobBlockSizes(block_n=16, block_v=128)
GPU_BLOCKS = LogprobBlockSizes(block_n=16, block_v=64, block_d=16)
XLA_BLOCKS = LogprobBlockSizes(block_n=16, block_v=128)


# ----------------------------------------------------------------------------- the oracle


def oracle(hidden, lm_head, targets, temperature, g, e):
    """float64 logp, entropy and the vjp (dh, dW) for cotangents g (of logp) and e (of entropy)."""
    h, w = np.asarray(hidden, np.float64), np.asarray(lm_head, np.float64)
    z = h @ w / temperature
    m = z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    logsm = z - lse
    p = np.exp(logsm)
    rows = np.arange(len(targets))
    logp = logsm[rows, targets]
    entropy = -(p * logsm).sum(axis=1)
    onehot = np.zeros_like(z)
    onehot[rows, targets] = 1.0
    ez = (p * z).sum(axis=1, keepdims=True)
    dz = (g[:, None] * (onehot - p) - e[:, None] * p * (z - ez)) / temperature
    return logp, entropy, dz @ w.T, h.T @ dz


def test_oracle_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n, d, v, temperature = 3, 4, 7, 0.7
    h, w = rng.normal(size=(n, d)), rng.normal(size=(d, v))
    t, g, e = rng.integers(0, v, n), rng.normal(size=n), rng.normal(size=n)

    def objective(h, w):
        logp, entropy, _, _ = oracle(h, w, t, temperature, g, e)
        return g @ logp + e @ entropy

    _, _, dh, dw = oracle(h, w, t, temperature, g, e)
    for x, grad in ((h, dh), (w, dw)):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            step = np.zeros_like(x)
            step[idx] = 1e-6
            plus = objective(h + step, w) if x is h else objective(h, w + step)
            minus = objective(h - step, w) if x is h else objective(h, w - step)
            numeric[idx] = (plus - minus) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    n: int
    d: int
    v: int
    temperature: float = 1.0
    logit_scale: float = 1.0  # multiplies the hidden states, hence the logits
    entropy: bool = True
    dtype: str = "float32"


CASES = {
    # N and V not multiples of the tiles; targets on tile edges and the last column (see below).
    "ragged": Case("ragged", n=45, d=24, v=300, entropy=False),
    # Logits x30 and temperature 0.6: a peaked softmax, where a naive exp overflows.
    "peaked": Case("peaked", n=40, d=32, v=260, temperature=0.6, logit_scale=30.0),
    # A model width that is not a power of two (Qwen2.5-1.5B has D = 1536).
    "wide": Case("wide", n=20, d=1536, v=200, temperature=0.6),
    "bf16": Case("bf16", n=45, d=40, v=300, temperature=0.6, logit_scale=3.0, dtype="bfloat16"),
}


def make_inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(case.dtype)
    hidden = rng.normal(size=(case.n, case.d)) * case.logit_scale / np.sqrt(case.d)
    lm_head = rng.normal(size=(case.d, case.v))
    targets = rng.integers(0, case.v, size=case.n)
    # Edge columns: first, last, both sides of a 128-wide tile boundary, and one inside the
    # stretch that xla_chunked's clamped last vocab block covers a second time.
    targets[:5] = [0, case.v - 1, 127, 128, case.v - 100]
    g = rng.normal(size=case.n)
    e = rng.normal(size=case.n) if case.entropy else np.zeros(case.n)
    # The oracle sees exactly the (rounded) values the kernel sees.
    hidden, lm_head = jnp.asarray(hidden, dtype), jnp.asarray(lm_head, dtype)
    return hidden, lm_head, jnp.asarray(targets, jnp.int32), g, e


def run(case, hidden, lm_head, targets, g, e, **kwargs):
    """(logp, entropy, dh, dW) from the public API, gradients through jax.vjp."""
    def f(h, w):
        return token_logprobs(h, w, targets, temperature=case.temperature,
                              return_entropy=case.entropy, **kwargs)

    (logp, entropy), vjp = jax.vjp(f, hidden, lm_head)
    cotangent = (jnp.asarray(g, jnp.float32),
                 jnp.asarray(e, jnp.float32) if case.entropy else None)
    dh, dw = vjp(cotangent)
    return logp, entropy, dh, dw


def assert_matches_oracle(case, outputs, hidden, lm_head, targets, g, e):
    logp, entropy, dh, dw = outputs
    want = oracle(hidden.astype(jnp.float32), lm_head.astype(jnp.float32), np.asarray(targets),
                  case.temperature, g, e)
    assert logp.dtype == jnp.float32 and logp.shape == (case.n,)
    assert dh.dtype == hidden.dtype and dw.dtype == lm_head.dtype
    if case.entropy:
        assert entropy.dtype == jnp.float32 and entropy.shape == (case.n,)
    else:
        assert entropy is None
    tol = F32_TOL if case.dtype == "float32" else BF16_TOL
    names = ("logp", "entropy", "d_hidden", "d_lm_head")
    for name, got, ref in zip(names, (logp, entropy, dh, dw), want):
        if got is None:
            continue
        got = np.asarray(got, np.float64)
        assert np.all(np.isfinite(got)), f"{case.name}: {name} has non-finite values"
        err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
        assert err <= tol, f"{case.name}: {name} relative error {err:.2e} > {tol:.0e}"


IMPLS = {
    "reference": dict(impl="reference"),
    "xla_chunked": dict(impl="xla_chunked", block_sizes=XLA_BLOCKS),
    "xla_chunked_default_tiles": dict(impl="xla_chunked"),
    "pallas_tpu": dict(impl="pallas_tpu", block_sizes=TPU_BLOCKS, interpret=True),
    "pallas_gpu": dict(impl="pallas_gpu", block_sizes=GPU_BLOCKS, interpret=True),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_matches_float64_oracle(case_name, impl):
    case = CASES[case_name]
    inputs = make_inputs(case)
    outputs = run(case, *inputs, **IMPLS[impl])
    assert_matches_oracle(case, outputs, *inputs)


@pytest.mark.parametrize("case_name", ["peaked", "bf16"])
def test_pallas_tpu_in_tpu_interpret_mode(case_name, tpu_interpret):
    """Simulated TPU memory: the out-of-range part of a boundary block reads NaN, so any missing
    mask shows up as a non-finite output; two cores run the parallel grid axes concurrently."""
    case = CASES[case_name]
    inputs = make_inputs(case, seed=1)
    outputs = run(case, *inputs, impl="pallas_tpu", block_sizes=TPU_BLOCKS,
                  interpret=tpu_interpret.params)
    assert_matches_oracle(case, outputs, *inputs)
    if tpu_interpret.recording:
        assert len(tpu_interpret.states) == 3  # forward, dh and dW kernels all ran


def test_jit_and_mixed_dtypes_promote():
    case = CASES["ragged"]
    hidden, lm_head, targets, g, e = make_inputs(case)
    f = jax.jit(lambda h, w: token_logprobs(h, w, targets, impl="xla_chunked")[0])
    mixed = f(hidden.astype(jnp.bfloat16), lm_head)  # promoted to f32
    np.testing.assert_allclose(
        mixed, f(hidden.astype(jnp.bfloat16).astype(jnp.float32), lm_head), rtol=1e-6)


def test_auto_picks_xla_chunked_on_cpu():
    assert resolve_impl("auto") == "xla_chunked"


def test_xla_chunked_never_materializes_logits():
    """XLA's own buffer assignment: temporaries far below one f32 N x V array, fwd + bwd."""
    n, d, v = 2048, 64, 32768
    args = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32))

    def temp_bytes(impl):
        def loss(h, w, t):
            logp, entropy = token_logprobs(h, w, t, return_entropy=True, impl=impl)
            return jnp.sum(logp) + jnp.sum(entropy)
        compiled = jax.jit(jax.grad(loss, (0, 1))).lower(*args).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = n * v * 4
    assert temp_bytes("reference") >= logits_bytes  # the measure sees a materialized N x V
    assert temp_bytes("xla_chunked") <= logits_bytes / 10


def test_pallas_gpu_lowers_to_triton():
    """No GPU here: lower for CUDA, which runs the Pallas -> Triton IR lowering (not ptxas)."""
    n, d, v = 256, 1536, 1000
    f = jax.jit(lambda h, w, t: token_logprobs(h, w, t, impl="pallas_gpu", return_entropy=True))
    lowered = f.trace(jax.ShapeDtypeStruct((n, d), jnp.bfloat16),
                      jax.ShapeDtypeStruct((d, v), jnp.bfloat16),
                      jax.ShapeDtypeStruct((n,), jnp.int32)).lower(lowering_platforms=("cuda",))
    assert "__gpu$xla.gpu.triton" in lowered.as_text()


@pytest.mark.parametrize("impl, blocks, field", [
    ("pallas_tpu", LogprobBlockSizes(block_n=16, block_v=100), "block_v"),
    ("pallas_tpu", LogprobBlockSizes(block_n=12, block_v=128), "block_n"),
    ("pallas_tpu", LogprobBlockSizes(block_n=4096, block_v=4096), "VMEM"),
    ("pallas_gpu", LogprobBlockSizes(block_n=24, block_v=64, block_d=16), "block_n"),
    ("pallas_gpu", LogprobBlockSizes(block_n=16, block_v=64), "block_d"),
])
def test_block_sizes_validated_per_backend(impl, blocks, field):
    hidden, lm_head, targets, _, _ = make_inputs(CASES["ragged"])
    with pytest.raises(ValueError, match=field):
        token_logprobs(hidden, lm_head, targets, impl=impl, block_sizes=blocks, interpret=True)


def test_bad_arguments_raise():
    hidden, lm_head, targets, _, _ = make_inputs(CASES["ragged"])
    with pytest.raises(ValueError, match="impl"):
        token_logprobs(hidden, lm_head, targets, impl="cuda")
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden, lm_head, targets, temperature=0.0)
    with pytest.raises(ValueError, match="shapes disagree"):
        token_logprobs(hidden, lm_head.T, targets)
    with pytest.raises(ValueError, match="integer"):
        token_logprobs(hidden, lm_head, targets.astype(jnp.float32))
    with pytest.raises(ValueError, match="positive"):
        LogprobBlockSizes(block_n=0)
