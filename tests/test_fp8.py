"""FP8 block-scaled weights (DeepSeek-V3/R1): dequantization against a float64 reference on whole
and ragged blocks, the quantize → dequantize error bound, a tiny FP8 checkpoint read from disk
(our reader and a safe_open handle), and the errors on bad input."""
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from r1jax.hf import fp8


def _fp8_weight(shape, seed):
    rng = np.random.default_rng(seed)
    # Spread over e4m3's range, subnormals included.
    values = rng.normal(size=shape) * np.exp2(rng.integers(-9, 8, size=shape))
    return np.clip(values, -448, 448).astype(ml_dtypes.float8_e4m3fn)


def _reference_float64(w_OxI, scale_inv, block_size):
    rows = np.arange(w_OxI.shape[0]) // block_size[0]
    cols = np.arange(w_OxI.shape[1]) // block_size[1]
    return w_OxI.astype(np.float64) * scale_inv.astype(np.float64)[rows][:, cols]


@pytest.mark.parametrize("shape, block_size", [
    ((256, 384), (128, 128)),   # whole blocks
    ((300, 200), (128, 128)),   # ragged last row and column of blocks
    ((5, 130), (128, 128)),     # fewer rows than one block
    ((37, 23), (8, 4)),
])
def test_dequantize_matches_float64_reference(shape, block_size):
    w = _fp8_weight(shape, seed=sum(shape))
    scale_shape = tuple(-(-d // b) for d, b in zip(shape, block_size))
    scale_inv = np.random.default_rng(0).uniform(1e-4, 2.0, size=scale_shape).astype(np.float32)
    want = _reference_float64(w, scale_inv, block_size)
    got = fp8.dequantize_fp8(w, scale_inv, block_size)
    assert got.dtype == np.float32 and got.shape == shape
    # one float32 rounding of an exact product
    np.testing.assert_allclose(got, want, rtol=2.0 ** -24, atol=0)
    got_bf16 = fp8.dequantize_fp8(w, scale_inv, block_size, dtype=ml_dtypes.bfloat16)
    assert got_bf16.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got_bf16.astype(np.float64), want, rtol=2.0 ** -8, atol=0)


def test_quantize_dequantize_round_trip_error_bound():
    rng = np.random.default_rng(1)
    shape, block = (300, 260), (128, 128)
    w = (rng.normal(size=shape) * np.exp(rng.normal(size=shape) * 2)).astype(np.float32)
    w[:128, 128:256] = 0.0          # an all-zero block
    w[128:256, :128] *= 1e-6        # a block of tiny values
    q, scale_inv = fp8.quantize_fp8(w, block)
    assert q.dtype == ml_dtypes.float8_e4m3fn and scale_inv.shape == (3, 3)
    assert scale_inv[0, 1] == 1.0 and not q[:128, 128:256].astype(np.float32).any()
    back = fp8.dequantize_fp8(q, scale_inv, block)
    scale_map = scale_inv[np.arange(shape[0]) // 128][:, np.arange(shape[1]) // 128]
    # e4m3 keeps 3 mantissa bits: half an ulp is 2^-4 relative in the normal range; below
    # 2^-6 (scaled) the spacing is 2^-9, so half of it is 2^-10 absolute (scaled).
    bound = np.maximum(np.abs(w) * 2.0 ** -4, scale_map * 2.0 ** -10)
    err = np.abs(back.astype(np.float64) - w)
    assert (err <= bound * (1 + 1e-6)).all(), float((err / bound).max())
    # Each non-zero block's largest magnitude lands on e4m3's largest value.
    q32 = np.abs(q.astype(np.float32))
    for i in range(3):
        for j in range(3):
            block_max = q32[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].max()
            assert block_max == (0.0 if (i, j) == (0, 1) else fp8.FP8_MAX)


def _tiny_checkpoint(tmp_path):
    rng = np.random.default_rng(2)
    tensors = {
        "model.layers.0.self_attn.kv_b_proj.weight": rng.normal(size=(200, 72)).astype(np.float32),
        "model.layers.0.mlp.down_proj.weight": rng.normal(size=(64, 130)).astype(np.float32),
        "model.layers.0.input_layernorm.weight": rng.normal(size=(64,)).astype(ml_dtypes.bfloat16),
        "model.embed_tokens.weight": rng.normal(size=(10, 64)).astype(np.float32),
    }
    quantized = fp8.quantize_tensors(
        tensors, lambda name, x: x.ndim == 2 and "embed_tokens" not in name)
    path = str(tmp_path / "model.safetensors")
    save_file(quantized, path, metadata={"format": "pt"})
    return tensors, quantized, path


def test_tiny_fp8_checkpoint_dequantizes_from_disk(tmp_path):
    tensors, quantized, path = _tiny_checkpoint(tmp_path)
    assert sorted(n for n in quantized if n.endswith(fp8.SCALE_SUFFIX)) == [
        "model.layers.0.mlp.down_proj.weight_scale_inv",
        "model.layers.0.self_attn.kv_b_proj.weight_scale_inv"]
    on_disk = fp8.read_safetensors(path)
    assert on_disk["model.layers.0.mlp.down_proj.weight"].dtype == ml_dtypes.float8_e4m3fn
    out = dict(fp8.dequantize_tensors(on_disk))
    assert sorted(out) == sorted(tensors)  # scales dropped, nothing else
    for name, value in tensors.items():
        if quantized[name].dtype == ml_dtypes.float8_e4m3fn:
            scale = quantized[name + fp8.SCALE_SUFFIX]
            np.testing.assert_array_equal(out[name], fp8.dequantize_fp8(quantized[name], scale))
            assert np.abs(out[name] - value).max() <= np.abs(value).max() * 2.0 ** -4
        else:
            np.testing.assert_array_equal(out[name], value)  # passed through untouched
            assert out[name].dtype == value.dtype

    safe_open = pytest.importorskip("safetensors").safe_open
    pytest.importorskip("torch")
    with safe_open(path, framework="pt") as handle:
        from_handle = dict(fp8.dequantize_tensors(handle))
    for name, value in out.items():
        np.testing.assert_array_equal(from_handle[name], value)


def test_block_size_from_config():
    assert fp8.block_size_of({}) is None
    config = {"quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                      "quant_method": "fp8", "weight_block_size": [128, 128]}}
    assert fp8.block_size_of(config) == (128, 128)
    with pytest.raises(fp8.FP8Error, match="only quant_method 'fp8'"):
        fp8.block_size_of({"quantization_config": {"quant_method": "awq"}})
    with pytest.raises(fp8.FP8Error, match="weight_block_size must be two positive"):
        fp8.block_size_of({"quantization_config": {"quant_method": "fp8",
                                                   "weight_block_size": [128]}})


def test_errors_on_bad_input():
    w, scale = fp8.quantize_fp8(np.ones((130, 5), np.float32))
    assert scale.shape == (2, 1)
    with pytest.raises(fp8.FP8Error, match=r"x.weight_scale_inv has shape \[1, 1\].*needs \[2, 1"):
        fp8.dequantize_fp8(w, scale[:1], name="x.weight")
    with pytest.raises(fp8.FP8Error, match="are matrices"):
        fp8.dequantize_fp8(w[0], scale[0])
    with pytest.raises(fp8.FP8Error, match="has no 'a.weight_scale_inv'"):
        list(fp8.dequantize_tensors({"a.weight": w}))
    with pytest.raises(fp8.FP8Error, match="a block scale with no weight 'b.weight'"):
        list(fp8.dequantize_tensors({"a.weight": w, "a.weight_scale_inv": scale,
                                     "b.weight_scale_inv": scale}))
    with pytest.raises(fp8.FP8Error, match=r"needs \[2, 1\]"):
        list(fp8.dequantize_tensors({"a.weight": w, "a.weight_scale_inv": scale.T.copy()}))


def test_read_safetensors_refuses_a_non_safetensors_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"notjs")
    with pytest.raises(ValueError, match="not a safetensors file"):
        fp8.read_safetensors(str(path))
