"""benchmarks/rollout_memory.py: its analytic KV bytes are what the engines allocate, and a tiny
paged rollout compiles for a TPU topology (libtpu; skipped without it). A tiny model throughout."""
import importlib.util
import math
import os
import sys

import jax
import pytest

from r1jax import models, rollout
from r1jax.rl.aot_memory import chip_bytes
from r1jax.rollout import paged
from r1jax.sharding import Sharding, make_mesh

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "rollout_memory.py")
_spec = importlib.util.spec_from_file_location("rollout_memory", _PATH)
rm = sys.modules.setdefault("rollout_memory", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(rm)

CFG = models.ModelConfig(vocab_size=48, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=False, max_position_embeddings=256)
PROMPTS = [[5, 17, 33], [7, 3, 12, 5, 8, 21, 40, 1, 4], [44], [9, 9, 10, 11]]
T, G, PAGE, SLOTS = 24, 2, 4, 3
LP = 16  # the prompts' bucket (rollout.DEFAULT_PROMPT_BUCKETS starts at 16)


@pytest.fixture(scope="module")
def params():
    return models.init(CFG, jax.random.key(0))


def _generate(params, engine, **kwargs):
    return rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(1), max_new_tokens=T,
                            group_size=G, stop_ids=(2, 3), engine=engine, **kwargs)


def test_kv_bytes_per_token():
    assert rm.kv_bytes_per_token(CFG) == 2 * 2 * 2 * 16 * 4  # layers x (k, v) x K x E x f32
    qwen7b = models.get_config("qwen2.5-7b", dtype="bfloat16")
    assert rm.kv_bytes_per_token(qwen7b) == 56 * 2**10


def test_dense_count_is_the_lockstep_cache(params):
    out = _generate(params, "lockstep")
    tokens = rm.dense_kv_tokens(len(PROMPTS), G, LP, T)
    assert out.kv_tokens == tokens == len(PROMPTS) * G * (LP + T - 1)
    work = rm.Workload(len(PROMPTS), G, LP, T)
    inputs = rm.abstract_inputs(CFG, None, work)
    # Both decode paths: the CPU one (its last segment's cache) and the accelerators' one.
    for unstack in (True, False):
        traced = rm.lockstep_fn(CFG, None, work, unstack=unstack).trace(*inputs)
        assert rm.loop_kv_carry_bytes(traced.jaxpr, CFG) == tokens * rm.kv_bytes_per_token(CFG)


@pytest.mark.parametrize("kv_pages", [0, 30])  # the default (worst case) pool, an overcommitted one
def test_paged_count_is_the_pool(params, kv_pages):
    out = _generate(params, "paged", decode_slots=SLOTS, page_size=PAGE, kv_pages=kv_pages)
    plan = paged.plan(len(PROMPTS), LP, G, T, decode_slots=SLOTS, page_size=PAGE,
                      kv_pages=kv_pages)
    tokens = rm.paged_kv_tokens(plan, 1)
    assert out.kv_tokens == tokens
    if not kv_pages:  # prompts' pages + every slot's worst case
        assert tokens == (len(PROMPTS) * LP // PAGE + SLOTS * math.ceil((T - 1) / PAGE)) * PAGE
    traced = rm.paged_fn(CFG, None, rm.Workload(len(PROMPTS), G, LP, T), plan).trace(
        *rm.abstract_inputs(CFG, None, rm.Workload(len(PROMPTS), G, LP, T)))
    assert rm.loop_kv_carry_bytes(traced.jaxpr, CFG) == tokens * rm.kv_bytes_per_token(CFG)
    setting = rm.KVSetting("paged", "paged", tokens, 1, plan)
    assert setting.bytes_per_chip(CFG) == tokens * rm.kv_bytes_per_token(CFG)


def test_sharded_paged_count_is_per_shard(params):
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, jax.devices()[:2]))
    assert rm.batch_shards(sharding, len(PROMPTS)) == 2
    params_s = jax.device_put(params, models.param_shardings(CFG, sharding))
    out = _generate(params_s, "paged", decode_slots=4, page_size=PAGE, sharding=sharding)
    plan = paged.plan(len(PROMPTS), LP, G, T, decode_slots=4, page_size=PAGE, shards=2)
    assert out.kv_tokens == rm.paged_kv_tokens(plan, 2) == 2 * plan.kv_pages * PAGE


def test_mean_sized_pool_and_the_settings_table():
    # 7B at the paper's shapes: 8 shards, 16 slots each at 8192 / 0.8 tokens, beside 4 prompts'
    # 32 pages: 10240 + 128 pages of 16 per shard.
    pages = rm.pool_pages_for(32, 512, 128, 8192, 0.8, page_size=16, shards=8)
    assert pages == 8 * (4 * 32 + 16 * 8192 * 10 // 8 // 16)
    settings = rm.kv_settings(32, 16, 512, 32768, [128], 8192, 0.8, 16, 8)
    assert [s.engine for s in settings] == ["lockstep", "paged", "paged"]
    cfg = models.get_config("qwen2.5-7b", dtype="bfloat16")
    dense, worst, sized = (s.bytes_per_chip(cfg) for s in settings)
    assert dense == 512 * (512 + 32767) // 8 * 56 * 2**10
    assert worst == (4 * 32 + 16 * 2048) * 16 * 56 * 2**10
    assert sized == pages // 8 * 16 * 56 * 2**10 and sized < worst < dense
    table = rm.analytic_table(cfg, settings, 8, 8, rm.TPU_HBM_BYTES["v5p"])
    assert "113.75" in table and "NO" in table.splitlines()[1]  # the dense cache: 113.75 GiB
    with pytest.raises(ValueError, match="utilization"):
        rm.pool_pages_for(32, 512, 128, 8192, 0.0)


def test_extrapolation_is_linear_in_the_layers():
    def run(n, temp):
        return rm.Compiled(rm.ProgramMemory("p", 10 * n, 1, 0, temp, 5), n, 0.0, 0)

    p, heap = rm.extrapolate([run(1, 100), run(2, 150)], 28, "p")
    assert heap is None
    assert (p.argument_bytes, p.temp_bytes, p.output_bytes) == (280, 50 + 50 * 28, 1)
    refused = rm.ProgramMemory("p", 0, 0, 0, 0, 0, 1000)
    q, _ = rm.extrapolate([rm.Compiled(refused, 2, 0.0, 0),
                        rm.Compiled(rm.ProgramMemory("p", 0, 0, 0, 0, 0, 1500), 4, 0.0, 0)],
                       8, "p")
    assert q.refused and q.required_bytes == 2500


def test_tiny_paged_rollout_compiles_for_a_tpu_topology():
    """Sharded over a v5p:2x2x1 slice's 4 chips, traced as on TPU: the paged attention is the
    Pallas kernel, the decode loop carries each shard's pool, and XLA:TPU's memory analysis
    counts at least that pool per chip."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    devices = rm.tpu_devices("v5p:2x2x1")
    sharding = Sharding(make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices))
    cfg = models.get_config("tiny", dtype="bfloat16", param_dtype="bfloat16")
    work = rm.Workload(num_prompts=4, group_size=4, prompt_len=16, max_new_tokens=64)
    shards = rm.batch_shards(sharding, work.num_prompts)
    assert shards == 4
    plan = paged.plan(4, 16, 4, 64, decode_slots=8, page_size=16, shards=shards,
                      attention="pallas_tpu")
    fn = rm.paged_fn(cfg, sharding, work, plan)
    inputs = rm.abstract_inputs(cfg, sharding, work)
    run = rm.compile_program("paged", fn, inputs, cfg, "tpu", 1)
    assert run.kernels == ("ragged_paged_attention",)
    pool = rm.paged_kv_tokens(plan, shards) // shards * rm.kv_bytes_per_token(cfg)
    assert not run.program.refused, run.program.note
    assert run.kv_carry_bytes == pool
    assert run.program.temp_bytes >= pool
    assert run.program.argument_bytes >= chip_bytes(inputs[0])  # the parameters' FSDP shards
    row = rm.program_row("paged", run.program, "1 s", run.kv_carry_bytes,
                         rm.TPU_HBM_BYTES["v5p"])
    assert row.split()[-3] == "yes"
    assert rm.need_bytes(run.program, None) == run.program.peak_bytes
