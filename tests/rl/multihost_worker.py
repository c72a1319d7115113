"""Two GRPO steps on a 2×2×2 mesh, as one process of a multi-process job or as a single process.

Run by tests/rl/test_step.py:  python multihost_worker.py --devices 4 --num-processes 2
--process-id I --port P --out result.npz   (or --devices 8 --num-processes 1 for the reference).
Process 0 writes the final parameters to ``--out``.
"""
import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--devices", type=int, required=True)
parser.add_argument("--num-processes", type=int, default=1)
parser.add_argument("--process-id", type=int, default=0)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--out", required=True)
args = parser.parse_args()
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from r1jax import distributed, models  # noqa: E402
from r1jax.rl import GRPOBatch, GRPOConfig, LossConfig, OptimConfig  # noqa: E402
from r1jax.rl import init_train_state, make_grpo_step, make_optimizer  # noqa: E402
from r1jax.sharding import Sharding, make_mesh  # noqa: E402

if args.num_processes > 1:
    distributed.initialize(distributed.DistributedConfig(
        coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes,
        process_id=args.process_id))
assert jax.device_count() == 8, jax.devices()

CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=True)
GRPO = GRPOConfig(loss=LossConfig(beta=0.04), optim=OptimConfig(learning_rate=1e-2),
                  group_size=4)


def make_batch(seed, rows=8, prompt=5, completion=6):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, (rows, prompt + completion)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[::3, :2] = 0  # some left padding
    lengths = rng.integers(2, completion + 1, rows)
    completion_mask = (np.arange(completion)[None] < lengths[:, None]).astype(np.int32)
    mask[:, prompt:] = completion_mask
    adv = rng.normal(size=rows).astype(np.float32)
    return GRPOBatch(tokens, mask, completion_mask, adv)


sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
params = models.init_sharded(CFG, jax.random.key(0), sharding)
ref_params = models.init_sharded(CFG, jax.random.key(1), sharding)
optimizer = make_optimizer(GRPO.optim)
state = init_train_state(params, optimizer)
step = make_grpo_step(GRPO, CFG, optimizer, state, sharding)
for seed in (0, 1):
    full = make_batch(seed)
    local = full.rows(*(lambda s: (s.start, s.stop))(distributed.host_rows(8)))
    batch = distributed.global_batch(local, sharding.rows(full))
    state, metrics = step(state, batch, ref_params)
final = multihost_utils.process_allgather(state.params, tiled=True)
if distributed.is_main_process():
    flat = {jax.tree_util.keystr(path): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(final)}
    np.savez(args.out, loss=float(metrics["loss"]), **flat)
sys.exit(0)
