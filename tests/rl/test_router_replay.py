"""Router replay (``grpo.router_replay``): the rollout records each token's expert choices (both
engines, a left-padded batch of uneven lengths), they are the choices a teacher-forced forward
makes, every training forward of the batch (old-policy, reference, update) then routes exactly as
recorded — even when the weights moved and a fresh routing differs — its balance metrics are the
replayed forward's, a tiny MoE R1-Zero trains with it, and a dense model refuses it. With the
flag off the compiled decode loops carry nothing more."""
import collections
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

from r1jax import hf, models, pipeline, rollout
from r1jax.configdict import load_experiment
from r1jax.metrics import read_jsonl
from r1jax.rl import (GRPOConfig, LossConfig, OptimConfig, init_train_state, make_grpo_step,
                      make_optimizer)
from r1jax.rl import batch as batch_lib
from r1jax.rl.logprobs import completion_forward
from r1jax.rl.moe_balance import PREFIX
from r1jax.rl.trainer import logprobs_for_update
from r1jax.rollout import paged
from r1jax.rollout.lockstep import compiled_rollout
from r1jax.rollout.sampling import SamplingParams
from r1jax.rollout.stops import StopCriteria
from r1jax.run_checks import RunCheckError
from r1jax.sharding import Sharding, make_mesh

# Qwen3-MoE-shaped: 8 experts, top-2, the first of 3 layers dense (so Y = 2 MoE layers).
MOE = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=3,
                         num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen3_moe",
                         qk_norm=True, tie_embeddings=True, n_routed_experts=8,
                         num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True,
                         first_k_dense_replace=1, max_position_embeddings=64)
Y, A = MOE.num_moe_layers, MOE.num_experts_per_tok
PROMPTS = [[5, 17, 33], [7, 3, 12, 5, 8, 21], [44]]  # left-padded to the bucket of 8
GROUP, NEW, BUCKET = 2, 8, 8
# Uneven lengths: completion padding, a one-token row (nothing of it is fed back), a full row.
BUDGETS = [8, 3, 5, 1, 8, 6]
ENGINES = {
    "lockstep": dict(engine="lockstep"),  # the CPU one-token decode step
    "lockstep-forward": dict(engine="lockstep", unstack_params=False),  # models.forward + cache
    "paged": dict(engine="paged", decode_slots=4),
    "paged-sharded": dict(engine="paged", decode_slots=2, sharded=True),
}


@pytest.fixture(scope="module")
def params():
    """Random weights with a router sharper than initialization's (its logits ×10): decisive
    choices, so that the float rounding of the engines' programs against the full forward flips
    one only at a rare near-tie."""
    p = models.init(MOE, jax.random.key(0))
    p["layers"]["moe"]["router_kernel"] = p["layers"]["moe"]["router_kernel"] * 10.0
    return p


@pytest.fixture(scope="module")
def moved(params):
    """The weights after an update, as far as routing is concerned: the router perturbed (the
    trainer's weights are not the ones the sampler routed with)."""
    kernel = params["layers"]["moe"]["router_kernel"]
    noise = jax.random.normal(jax.random.key(7), kernel.shape) * jnp.std(kernel)
    return {**params, "layers": {**params["layers"], "moe": {
        **params["layers"]["moe"], "router_kernel": kernel + 0.5 * noise}}}


def _generate(params, engine):
    kwargs = dict(ENGINES[engine])
    if kwargs.pop("sharded", False):
        sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
        params = jax.device_put(params, models.param_shardings(MOE, sharding))
        kwargs["sharding"] = sharding
    return rollout.generate(params, MOE, PROMPTS, rng=jax.random.key(1), max_new_tokens=NEW,
                            group_size=GROUP, prompt_buckets=(BUCKET,), sample_budgets=BUDGETS,
                            record_experts=True, **kwargs)


def _batch(out):
    return batch_lib.make_batch(out, jnp.linspace(-1.0, 1.0, len(BUDGETS)), columns=NEW,
                                router_replay=True)


@pytest.fixture(scope="module", params=list(ENGINES))
def recorded(request, params):
    out = _generate(params, request.param)
    return out, _batch(out)


@pytest.fixture(scope="module")
def lockstep(params):
    out = _generate(params, "lockstep")
    return out, _batch(out)


def _routed(out):
    """``[B, L - 1]``: the positions of the training forward (over prompt + completion[:-1])
    whose token went through the sampler's model: a real prompt token, or a completion token
    that was fed back to sample the next (each row's last never is)."""
    prompt_mask = np.repeat(np.asarray(out.prompt_mask).astype(bool), GROUP, axis=0)
    lengths = np.asarray(out.lengths)
    completion = np.arange(NEW - 1)[None, :] < (lengths - 1)[:, None]
    return np.concatenate([prompt_mask, completion], axis=1)


def _last_tokens(out):
    """``[B, L - 1]``: each row's last real token when the forward sees it (``length < T``)."""
    lengths = np.asarray(out.lengths)
    last = np.zeros((len(lengths), BUCKET + NEW - 1), bool)
    for row, n in enumerate(lengths):
        if BUCKET + n - 1 < last.shape[1]:
            last[row, BUCKET + n - 1] = True
    return last


def _tokens_first(expert_indices_YxBxLxA):
    return np.transpose(np.asarray(expert_indices_YxBxLxA), (1, 2, 0, 3))


def _fresh(params, batch):
    """The teacher-forced forward's own choices, ``[B, L - 1, Y, A]``."""
    out = models.forward(MOE, params, batch.tokens_BxL[:, :-1],
                         attention_mask_BxL=batch.attention_mask_BxL[:, :-1])
    return _tokens_first(out.moe_stats.expert_indices)


def _replayed(params, batch, experts=True):
    """The training forward (``completion_forward``), replaying the batch's choices or not:
    ``(logp [B, T], its choices [B, L - 1, Y, A], MoEStats)``."""
    logp, _, stats = completion_forward(
        MOE, params, batch.tokens_BxL, batch.attention_mask_BxL, NEW,
        experts_BxLxYxA=batch.experts_BxLxYxA if experts else None)
    return np.asarray(logp), _tokens_first(stats.expert_indices), stats


def test_recorded_choices_are_the_teacher_forced_forwards(params, recorded):
    out, batch = recorded
    assert out.prompt_experts.shape == (len(PROMPTS), BUCKET, Y, A)
    assert out.experts.shape == (len(BUDGETS), NEW, Y, A)
    assert out.experts.dtype == out.prompt_experts.dtype == jnp.uint8  # 8 experts
    assert batch.experts_BxLxYxA.shape == (len(BUDGETS), BUCKET + NEW, Y, A)
    assert np.asarray(out.lengths).tolist() == BUDGETS  # no stop id: every row ran its budget
    routed = _routed(out)
    assert routed.sum() == sum(map(len, PROMPTS)) * GROUP + sum(b - 1 for b in BUDGETS)
    recorded_BxLxYxA = np.asarray(batch.experts_BxLxYxA)[:, :-1]
    agree_NxY = (recorded_BxLxYxA == _fresh(params, batch)).all(-1)[routed]
    # Every (token, layer) choice but possibly a near-tie's, order of the top-k included.
    assert agree_NxY.mean() >= 0.99, agree_NxY.mean()


def test_replay_forward_routes_every_token_as_recorded(params, recorded):
    out, batch = recorded
    logp, chosen, _ = _replayed(params, batch)
    routed = _routed(out)
    np.testing.assert_array_equal(chosen[routed], np.asarray(batch.experts_BxLxYxA)[:, :-1][routed])
    # A row's last token was never routed by the sampler: the forward routes it afresh.
    last = _last_tokens(out)
    assert last.any()
    np.testing.assert_array_equal(chosen[last], _fresh(params, batch)[last])
    # Same weights, same routing: replay changes no log-prob.
    mask = np.asarray(batch.completion_mask_BxT).astype(bool)
    np.testing.assert_allclose(logp[mask], _replayed(params, batch, experts=False)[0][mask],
                               atol=1e-5)


def test_replay_keeps_the_rollouts_routing_when_the_weights_moved(moved, lockstep):
    out, batch = lockstep
    routed = _routed(out)
    recorded_BxLxYxA = np.asarray(batch.experts_BxLxYxA)[:, :-1]
    fresh_logp, fresh, _ = _replayed(moved, batch, experts=False)
    changed = ~(fresh == recorded_BxLxYxA).all(-1)[routed]
    assert changed.sum() >= 5, changed.sum()  # the mismatch replay is for
    logp, chosen, _ = _replayed(moved, batch)
    np.testing.assert_array_equal(chosen[routed], recorded_BxLxYxA[routed])
    mask = np.asarray(batch.completion_mask_BxT).astype(bool)
    assert np.abs(logp - fresh_logp)[mask].max() > 1e-4


def test_old_policy_reference_and_update_forwards_all_replay(moved, lockstep):
    """``logprobs_for_update`` (several minibatches: old-policy and reference forwards once per
    rollout) and the update's forward replay the batch; the update's MoE metrics are those of the
    replayed forward."""
    _, batch = lockstep
    grpo = GRPOConfig(loss=LossConfig(beta=0.04), optim=OptimConfig(learning_rate=1e-3),
                      num_minibatches=2, router_replay=True)
    cfg = types.SimpleNamespace(grpo=grpo)
    with_logp, ref = logprobs_for_update(cfg, MOE, batch, None, moved, moved, None)
    assert ref is None
    replayed, _, stats = _replayed(moved, batch)
    fresh, _, fresh_stats = _replayed(moved, batch, experts=False)
    mask = np.asarray(batch.completion_mask_BxT).astype(bool)
    for logp in (with_logp.old_logp_BxT, with_logp.ref_logp_BxT):
        np.testing.assert_allclose(np.asarray(logp)[mask], replayed[mask], atol=1e-5)
        assert np.abs(np.asarray(logp) - fresh)[mask].max() > 1e-4
    # The update (one minibatch of the whole batch, the reference computed inside it).
    one = GRPOConfig(loss=LossConfig(beta=0.04), optim=OptimConfig(learning_rate=1e-3),
                     router_replay=True)
    optimizer = make_optimizer(one.optim)
    state = init_train_state(moved, optimizer)
    _, metrics = make_grpo_step(one, MOE, optimizer, state)(state, batch, moved)
    load = float(np.mean(np.asarray(stats.max_over_mean_load)))
    assert float(metrics[PREFIX + "max_over_mean_load"]) == pytest.approx(load, rel=1e-5)
    assert float(metrics[PREFIX + "aux_loss"]) == pytest.approx(
        float(np.mean(np.asarray(stats.aux_loss))), rel=1e-5)
    assert float(np.mean(np.asarray(fresh_stats.aux_loss))) != pytest.approx(
        float(metrics[PREFIX + "aux_loss"]), rel=1e-5)
    assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-6)  # reference = policy, replayed


def test_dynamic_sampling_keeps_each_groups_choices_with_its_tokens():
    """``collect.take_groups`` (groups picked from several rollouts, prompts re-padded on the
    left to the longest bucket) moves each group's recorded choices with its tokens."""
    from r1jax.rl.collect import Experience, ScoredRollout, take_groups

    def part(prompt_len, seed, prompts=2, group=2, new=3):
        rng = np.random.default_rng(seed)
        rows = prompts * group
        out = rollout.Rollout(
            tokens=rng.integers(1, 60, (rows, new)), lengths=np.full(rows, new),
            mask=np.ones((rows, new), bool), logprobs=np.zeros((rows, new), np.float32),
            stopped=np.ones(rows, bool), prompt_tokens=rng.integers(1, 60, (prompts, prompt_len)),
            prompt_mask=np.ones((prompts, prompt_len), np.int32), decode_steps=np.int32(new),
            prompt_experts=rng.integers(0, 8, (prompts, prompt_len, Y, A)).astype(np.uint8),
            experts=rng.integers(0, 8, (rows, new, Y, A)).astype(np.uint8))
        scored = ScoredRollout([""] * rows, np.zeros((prompts, group)), {}, np.full(rows, new),
                               np.ones(rows, bool), np.zeros(rows), {})
        return Experience(out, scored, [None] * prompts)

    short, long = part(4, 0), part(6, 1)
    merged = take_groups([short, long], [(1, 0), (0, 1)]).rollout
    np.testing.assert_array_equal(merged.experts[:2], long.rollout.experts[:2])
    np.testing.assert_array_equal(merged.experts[2:], short.rollout.experts[2:])
    np.testing.assert_array_equal(merged.prompt_experts[0], long.rollout.prompt_experts[0])
    np.testing.assert_array_equal(merged.prompt_experts[1, 2:], short.rollout.prompt_experts[1])
    batch = batch_lib.make_batch(merged, np.zeros(4), columns=3, router_replay=True)
    np.testing.assert_array_equal(np.asarray(batch.experts_BxLxYxA)[3, 2:6],
                                  short.rollout.prompt_experts[1])
    np.testing.assert_array_equal(np.asarray(batch.experts_BxLxYxA)[3, 6:],
                                  short.rollout.experts[3])


def _loop_carries(fn, *args):
    """What each ``while_loop`` of ``fn``'s program carries, as a multiset of avals per loop."""
    loops = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "while":
                body = eqn.params["body_jaxpr"]
                loops.append(collections.Counter(
                    (str(a.dtype), a.shape) for a in body.in_avals[eqn.params["body_nconsts"]:]))
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return loops


@pytest.mark.parametrize("engine", ["lockstep", "paged"])
def test_without_the_flag_the_decode_loops_carry_nothing_more(params, engine):
    batch = len(BUDGETS)
    ids = jnp.zeros((len(PROMPTS), BUCKET), jnp.int32)
    args = (params, ids, jnp.ones_like(ids), jnp.full((batch,), NEW, jnp.int32),
            jax.random.key(0))

    def program(record):
        if engine == "lockstep":
            return compiled_rollout(MOE, SamplingParams(), StopCriteria(), GROUP, NEW, 0, None,
                                    True, record)
        pool = paged.plan(len(PROMPTS), BUCKET, GROUP, NEW, decode_slots=4)
        return paged.compiled_paged(MOE, SamplingParams(), StopCriteria(), GROUP, NEW, 0, pool,
                                    None, record_experts=record)

    off, on = _loop_carries(program(False), *args), _loop_carries(program(True), *args)
    assert off and len(on) == len(off)
    decode_loops = 0
    for off_loop, on_loop in zip(off, on):
        assert not off_loop - on_loop  # nothing the plain loop carries is gone
        extra = on_loop - off_loop
        assert not extra or extra == collections.Counter({("uint8", (batch, NEW, Y, A)): 1})
        decode_loops += bool(extra)
    assert decode_loops >= 1
    assert not any(dtype == "uint8" for loop in off for dtype, _ in loop)


def test_tiny_moe_r1_zero_trains_with_router_replay(tiny_policy_dir, tmp_path):
    """``r1_zero.py:model=tiny-moe`` with ``grpo.router_replay`` (the repository's one end-to-end
    MoE run), its base a random MoE of the preset's shape at test width (the real base is
    pretrained, ~25 minutes): two steps of two minibatches each (old-policy and reference
    forwards) on the 8 CPU devices, the rollout decoding each batch shard on its own."""
    from r1jax.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_policy_dir)
    cfg = models.get_config("tiny-moe", vocab_size=256, hidden_size=32, intermediate_size=64,
                            head_dim=8, moe_intermediate_size=16, max_position_embeddings=256,
                            eos_token_id=tokenizer.eos_id)
    base = tmp_path / "moe_base"
    hf.save_pretrained(str(base), cfg, models.init(cfg, jax.random.key(0)))
    shutil.copyfile(tokenizer.path, base / "tokenizer.model")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = load_experiment(os.path.join(root, "experiments", "r1_zero.py:model=tiny-moe"))
    config.update_from_flattened_dict({
        "model.checkpoint": str(base), "model.pretrain_config": None, "steps": 2,
        "prompts_per_step": 8, "grpo.group_size": 2, "grpo.num_minibatches": 2,
        "grpo.loss.beta": 0.04, "grpo.router_replay": True, "rollout.max_new_tokens": 8,
        "eval.every": 0, "eval.num_problems": 4, "eval.num_samples": 2, "eval.max_new_tokens": 8,
        "data.num_test": 4, "rewards.num_workers": 0, "logging.tensorboard": False,
        "logging.progress_bar": False, "logging.samples_every": 0, "checkpoint.every": 2})
    workdir = str(tmp_path / "run")
    pipeline.run(config, workdir)
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:  # the expert balance is logged
        assert np.isfinite(row["loss"]) and row["moe/aux_loss"] > 0
        assert row["moe/max_over_mean_load_worst"] >= row["moe/max_over_mean_load"] >= 1.0
    assert hf.load_config(os.path.join(workdir, "export")).n_routed_experts == 8


def test_a_dense_model_refuses_router_replay(grpo_config, tmp_path, params):
    config = grpo_config()
    config.grpo.router_replay = True
    with pytest.raises(RunCheckError, match=r"grpo.router_replay replays a mixture of experts' "
                       r"routing, but the model \(qwen2\) is dense.*set grpo.router_replay=False"):
        pipeline.run(config, str(tmp_path / "dense"))
    dense = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                               num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                               max_position_embeddings=64)
    dense_params = models.init(dense, jax.random.key(0))
    with pytest.raises(ValueError, match="record_experts needs a mixture-of-experts model"):
        rollout.generate(dense_params, dense, PROMPTS, rng=jax.random.key(0), max_new_tokens=2,
                         record_experts=True)
    plain = rollout.generate(params, MOE, PROMPTS, rng=jax.random.key(0), max_new_tokens=2)
    assert plain.experts is None and plain.prompt_experts is None
    with pytest.raises(ValueError, match="router_replay needs a rollout that recorded"):
        batch_lib.make_batch(plain, jnp.zeros(3), columns=2, router_replay=True)
