"""launch/aot.py and r1jax.rl.aot: will a run fit a TPU slice? Compiled here for the topology.

Which programs a step runs, and the verdict's logic, are checked without compiling; the fit
checks compile for a v5e 2×2 topology with libtpu (skipped without it): the tiny model fits, a 7B
recipe does not, a budget past the model's positions is refused before anything compiles, and the
expert-parallel recipes' programs compile (the DeepSeek one's rollout on the paged engine over
the latent cache).
"""
import json
import os
import re
import subprocess
import sys

import pytest

from r1jax.configdict import from_config, load_experiment
from r1jax.rl import aot
from r1jax.rl.run_config import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R1_ZERO = os.path.join(ROOT, "experiments", "r1_zero.py")
# The Mosaic log-prob kernel needs its shard_map wrapper, which impl="auto" skips today (see
# r1jax/rl/logprobs.py); named explicitly, the programs compile as they would on the slice.
PALLAS = "grpo.logprob_impl=pallas_tpu"
NOISE = ("E0000", "=== Source Location", "learning/", "WARNING", "Failed to find host bounds")


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    return env


def _aot(spec, *overrides, extra=(), timeout=600):
    cmd = [sys.executable, "launch/aot.py", f"--config={spec}", "--topology=v5e:2x2",
           *[f"--config.{o}" for o in overrides], *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    done.stderr = "\n".join(line for line in done.stderr.splitlines()
                            if not line.startswith(NOISE))
    return done


def _config(spec, **flat):
    config = load_experiment(spec)
    config.update_from_flattened_dict(flat)
    return from_config(RunConfig, config)


def test_plan_mirrors_the_trainer():
    tiny = _config(R1_ZERO)  # one minibatch, one iteration, β = 0: on-policy
    assert aot.plan_step(tiny).phases == ("rollout", "grpo_step", "eval_rollout")
    paper = aot.plan_step(_config(f"{R1_ZERO}:model=qwen2.5-math-7b"))  # 16 minibatches, β > 0
    assert paper.phases == aot.PHASES and paper.old_logprobs == "recompute"
    assert paper.ref_program and not paper.ref_in_update and paper.minibatch_rows == 32
    # β > 0 with one update per rollout: the reference forward is inside the update.
    inside = aot.plan_step(_config(R1_ZERO, **{"grpo.loss.beta": 0.04}))
    assert inside.ref_in_update and "ref_logprobs" not in inside.phases
    # The sampler's log-probs: no old-policy program; no evaluation without problems.
    sampler = aot.plan_step(_config(R1_ZERO, **{"grpo.num_minibatches": 2,
                                                "grpo.old_logprobs": "sampler",
                                                "eval.num_problems": 0}))
    assert sampler.old_logprobs == "sampler" and sampler.phases == ("rollout", "grpo_step")
    # Prompts are padded to generate's bucket, as the rollout pads them.
    assert aot.plan_step(_config(R1_ZERO, **{"data.max_prompt_tokens": 300})).prompt_width == 512
    with pytest.raises(aot.BudgetError, match="data.max_prompt_tokens"):
        aot.plan_step(_config(R1_ZERO, **{"data.max_prompt_tokens": 200_000}))


def test_architecture_comes_from_the_checkpoint_as_the_run_takes_it():
    tiny = _config(R1_ZERO)  # experiments/assets/tiny_base: a config.json, no preset
    assert aot.resolve_model(tiny).vocab_size == 1024
    with pytest.raises(aot.BudgetError, match="is not model.preset 'tiny'"):
        aot.compile_for_topology(_config(R1_ZERO, **{"model.preset": "tiny"}), "v5e:2x2")


def test_out_of_memory_messages_give_the_bytes_needed():
    assert aot.required_bytes("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                              "required for HLO temporaries (60.29G) exceeds available HBM "
                              "(15.75G).") == int(60.29 * 2**30)
    assert aot.required_bytes("Used 17.50G of 15.48G hbm. Exceeded hbm capacity by 2.02G.") == \
        int(17.5 * 2**30)
    assert aot.required_bytes("INVALID_ARGUMENT: something else") is None


def test_aot_reports_per_chip_memory_for_tiny(tmp_path):
    """The tiny recipe (its checkpoint's config.json), shrunk: every program of a step compiled
    (β > 0 and two minibatches: old and reference log-prob programs too), what stays resident
    counted around each; it fits."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    out = tmp_path / "aot.json"
    done = _aot(R1_ZERO, "mesh.data=1", "mesh.fsdp=-1", "prompts_per_step=4",
                "grpo.group_size=4", "data.max_prompt_tokens=16", "rollout.max_new_tokens=16",
                "eval.max_new_tokens=16", "grpo.num_minibatches=2", "grpo.loss.beta=0.04", PALLAS,
                extra=[f"--json={out}", "--markdown"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fits in 16.00 GiB" in done.stdout and "| grpo_step | 2/step |" in done.stdout
    report = json.loads(out.read_text())
    assert report["chips"] == 4 and report["fits"] is True and report["skipped"] == []
    phases = {p["name"]: p for p in report["phases"]}
    assert list(phases) == list(aot.PHASES)
    state = report["state_bytes"]
    assert state["parameters"] > 0 and state["optimizer"] > 0
    assert state["reference"] == state["parameters"]  # β > 0: a separate copy, always resident
    for p in phases.values():
        program = p["program"]
        assert p["peak_bytes"] == p["resident_bytes"] + (
            program["argument_bytes"] + program["output_bytes"] - program["alias_bytes"]
            + program["temp_bytes"] + program["code_bytes"])
    resident = {name: dict(p["resident"]) for name, p in phases.items()}
    # The rollout takes the parameters; the optimizer state and the reference stay beside it.
    assert resident["rollout"]["optimizer state"] == state["optimizer"]
    assert resident["rollout"]["reference"] == state["reference"]
    assert phases["rollout"]["program"]["argument_bytes"] >= state["parameters"]
    # The update takes the train state, donated: its new state is written in place.
    step = phases["grpo_step"]["program"]
    assert step["argument_bytes"] >= state["parameters"] + state["optimizer"]
    assert step["alias_bytes"] >= state["parameters"] + state["optimizer"]
    assert resident["grpo_step"]["reference"] == state["reference"]
    assert report["peak_bytes"] == max(p["peak_bytes"] for p in phases.values())


def test_7b_recipe_does_not_fit_v5e_2x2():
    """DeepSeek-R1-Zero on Qwen2.5-Math-7B (bf16, β > 0, 16 minibatches), shrunk to compile
    quickly: with the train state sharded as the run shards it, its update still needs more than
    a v5e chip's 16 GiB; the report says by how much, and the exit status is 2."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    done = _aot(f"{R1_ZERO}:model=qwen2.5-math-7b,prompts=4,max_new_tokens=16",
                "data.max_prompt_tokens=16", "eval.max_new_tokens=16", PALLAS,
                extra=["--programs=grpo_step"])
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert "qwen2.5-math-7b (7.62B parameters) on v5e:2x2 (4 chips)" in done.stdout
    assert "DOES NOT FIT in 16.00 GiB" in done.stdout
    assert re.search(r"DOES NOT FIT in 16\.00 GiB of HBM \(\d+\.\d\d GiB over\)", done.stdout)
    assert "not compiled: rollout, old_logprobs, ref_logprobs, eval_rollout" in done.stdout


def test_budget_past_the_models_positions_is_refused_before_compiling(monkeypatch):
    """The README's first 7B budget, 1,024 prompt + 32,768 new tokens, on Qwen2.5-Math-7B's 4,096
    positions: refused naming the fields and the largest budget that fits, and nothing compiles."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    cfg = _config(f"{R1_ZERO}:model=qwen2.5-math-7b,max_new_tokens=32768",
                  **{"eval.max_new_tokens": 32768})

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled before the budgets were checked")

    monkeypatch.setattr(aot, "_compile", no_compiling)
    with pytest.raises(aot.BudgetError) as refused:
        aot.compile_for_topology(cfg, "v5e:2x2")
    message = str(refused.value)
    for part in ("data.max_prompt_tokens + rollout.max_new_tokens = 1024 + 32768", "4096",
                 "lower rollout.max_new_tokens to 3072", "eval.max_new_tokens"):
        assert part in message, message
    done = _aot(f"{R1_ZERO}:model=qwen2.5-math-7b,max_new_tokens=32768", timeout=120)
    assert done.returncode == 1 and not done.stdout
    assert "refused before compiling" in done.stderr and "rollout.max_new_tokens" in done.stderr


def test_expert_parallel_tiny_moe_compiles_and_fits(tmp_path):
    """``r1_zero.py:model=tiny-moe`` with its 8 experts over an expert axis of 4 (2 per chip) and
    router replay: the update (the expert-parallel shard_map forward and its gradient, the
    routing replayed) and the rollout (recording it) compile for the TPU; the expert weights are
    split, so each chip holds less than the whole model."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    out = tmp_path / "aot.json"
    # A preset without its checkpoint: the asset is not needed to size the run.
    done = _aot(f"{R1_ZERO}:model=tiny-moe,expert=4", "model.checkpoint=/nonexistent/tiny_moe",
                "model.preset=tiny-moe", "mesh.data=1", "mesh.fsdp=-1", "prompts_per_step=4",
                "grpo.group_size=4", "data.max_prompt_tokens=16", "rollout.max_new_tokens=16",
                "eval.max_new_tokens=16", "grpo.router_replay=True", PALLAS,
                extra=[f"--json={out}", "--programs=rollout,grpo_step"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["model"] == "tiny-moe" and report["chips"] == 4
    # Only two programs compiled, so no verdict for the run; each of them fits a chip.
    assert all(p["peak_bytes"] < report["hbm_bytes"] for p in report["phases"])
    assert [p["name"] for p in report["phases"]] == ["rollout", "grpo_step"]
    from r1jax import models

    whole = models.count_params(models.get_config("tiny-moe")) * 4  # float32 bytes
    assert report["state_bytes"]["parameters"] < whole / 2


def test_router_replay_counts_the_expert_record_in_the_rollout_and_the_batch():
    """With ``grpo.router_replay`` the rollout returns every token's expert choices (uint8 for
    Qwen3-30B-A3B's 128 experts) and the update batch carries them aligned with its tokens, so
    the check counts them (nothing is compiled)."""
    from r1jax.sharding import Sharding, make_mesh

    spec = f"{R1_ZERO}:model=qwen3-30b-a3b,prompts=4,max_new_tokens=16"
    sharding = Sharding(make_mesh({"fsdp": -1}))
    replayed = _config(spec, **{"data.max_prompt_tokens": 16, "grpo.router_replay": True})
    model_cfg, plan = aot.resolve_model(replayed), aot.plan_step(replayed)
    rows, width = plan.rows, plan.prompt_width + 16
    batch = aot.update_batch(replayed, model_cfg, plan, sharding, rows)
    assert batch.experts_BxLxYxA.shape == (rows, width, 48, 8)
    assert batch.experts_BxLxYxA.dtype == "uint8"
    prompts, completions = aot.rollout_outputs(replayed, model_cfg, plan, sharding)[-2:]
    assert prompts.shape == (4, plan.prompt_width, 48, 8) and completions.shape == (rows, 16, 48, 8)
    plain = _config(spec, **{"data.max_prompt_tokens": 16})
    assert aot.update_batch(plain, model_cfg, plan, sharding, rows).experts_BxLxYxA is None
    assert len(aot.rollout_outputs(plain, model_cfg, plan, sharding)) == 7


def test_verdict_needs_every_phase_compiled_and_within_the_chip():
    """The verdict from the phases alone (nothing compiled): fits only when every phase of the
    run was compiled and each peak is within HBM; unknown when some were left out; does not
    fit when a peak is over or XLA refused a program, whatever was left out."""
    gib = 2**30
    shapes = dict(prompts=4, group_size=4, prompt_width=16, max_new_tokens=16, minibatches=1,
                  minibatch_rows=16, iterations=1)
    rollout = aot.ProgramMemory("rollout", 3 * gib, 0, 0, 4 * gib, 0, compile_s=150.0)

    def report(resident, program=rollout, skipped=(), hbm=16 * gib):
        phase = aot.Phase(program.name, "1/step", program, (("optimizer state", resident),))
        return aot.AOTReport("v5e:2x2", 4, "m", 1, shapes, dict(parameters=3 * gib,
                             optimizer=resident, reference=0), (phase,), hbm, skipped)

    fits = report(8 * gib)
    assert fits.fits() is True and fits.verdict().endswith("fits in 16.00 GiB of HBM")
    assert "compiled here in: rollout 2.5 min" in fits.table()
    partial = report(8 * gib, skipped=("grpo_step",))
    assert partial.fits() is None and "not compiled: grpo_step" in partial.verdict()
    over = report(10 * gib, skipped=("grpo_step",))  # 17 GiB: over, even with a phase left out
    assert over.fits() is False and "DOES NOT FIT in 16.00 GiB of HBM (1.00 GiB over)" in \
        over.verdict()
    refused = aot.ProgramMemory("rollout", 0, 0, 0, 0, 0, 40 * gib, "RESOURCE_EXHAUSTED")
    assert report(0, refused).fits() is False
    assert report(8 * gib, hbm=None).fits() is None


def test_deepseek_recipe_rollout_compiles_with_the_latent_cache(tmp_path):
    """``r1_zero.py:model=deepseek-v2-lite`` with its base swapped for the tiny-deepseek preset
    (MLA, 8 experts top-2, a shared expert) and its experts over an expert axis of 4: the
    rollout compiles for the TPU with the paged engine over the latent cache (the Pallas
    attention kernel with one key/value head of latent entries). Only the rollout is compiled
    (CI has 2 cores; the update of an expert-parallel model is compiled by the tiny-moe test
    above), so there is no verdict."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    spec = f"{R1_ZERO}:model=deepseek-v2-lite,expert=4,prompts=4,group=4,max_new_tokens=16"
    shrunk = {"model.preset": "tiny-deepseek", "model.checkpoint": "/nonexistent/deepseek",
              "data.max_prompt_tokens": 16, "eval.max_new_tokens": 16,
              "grpo.num_minibatches": 2}
    out = tmp_path / "aot.json"
    done = _aot(spec, *[f"{k}={v}" for k, v in shrunk.items()],
                extra=[f"--json={out}", "--programs=rollout"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["model"] == "tiny-deepseek" and report["chips"] == 4
    # β > 0: the reference reset is counted beside the compiled rollout.
    assert [p["name"] for p in report["phases"]] == ["rollout", "ref_reset"]
    assert report["skipped"] == ["old_logprobs", "ref_logprobs", "grpo_step", "eval_rollout"]
    assert report["fits"] is None and "compiled here in: rollout" in done.stdout
    rollout = report["phases"][0]
    assert rollout["program"]["compile_s"] > 0 and rollout["peak_bytes"] < report["hbm_bytes"]
    from r1jax import models

    # bfloat16 weights, the experts split four ways: each chip holds less than the whole.
    whole = models.count_params(models.get_config("tiny-deepseek")) * 2
    assert report["state_bytes"]["parameters"] < whole
