r"""DeepSeek-R1-Zero: pure RL (GRPO) from a base model, R1-Zero template, rule-based rewards only.

Tiny default (the quickstart):

    python launch/run.py --config=experiments/r1_zero.py

Hardware: any CPU (measured on a 2-core machine). Time: under 10 minutes. It starts from the
project's own tiny base model (experiments/assets/tiny_base, produced by
experiments/pretrain_tiny.py and pretrained again automatically if missing), trains it with GRPO
on synthetic arithmetic chains using accuracy + format rewards and the verbatim R1-Zero template,
and prints held-out pass@1 before and after RL. Measured (README, 2 cores): held-out pass@1
1.5% → 75.8%, 2.2% → 77.0% and 1.8% → 74.2% for seeds 0, 1 and 2, in 4 min 17 s – 4 min 42 s;
format rate 90% → 100%; the held-out response growing from 28 to 36 tokens as the chain inside
<think> lengthens from one step to the full chain. Output in runs/r1_zero/: metrics.jsonl,
eval.jsonl, curves.png (accuracy, reward and response length over steps), summary.md, export/.

Real scale (the paper's recipe; arguments are ``key=value`` after a colon):

    python launch/run.py --config=experiments/r1_zero.py:model=qwen2.5-math-7b,\
ckpt=/models/Qwen2.5-Math-7B,train=/data/math_train.jsonl,test=/data/math500.jsonl

``model`` is an r1jax preset (qwen2.5-math-1.5b, qwen2.5-math-7b, qwen2.5-1.5b, qwen2.5-7b,
qwen2.5-32b, llama3.1-8b, llama3.3-70b, qwen3-30b-a3b, deepseek-v2-lite) and ``ckpt`` the
matching Hugging Face checkpoint directory
(``huggingface-cli download Qwen/Qwen2.5-Math-7B --local-dir /models/Qwen2.5-Math-7B``). The
architecture and the tokenizer come from the checkpoint (``config.json``, ``tokenizer.json``); the
preset must agree with it (the error names both) and lets ``launch/aot.py`` size the run without
the weights. ``train``/``test`` are JSONL files: MATH (``problem`` + ``solution`` with a
``\\boxed{}`` answer, or ``answer``), GSM8K (``question`` + ``answer`` with ``####``), or
``prompt`` + ``answer``. Settings are DeepSeek-R1's (arXiv 2501.12948): learning rate 3e-6, KL
coefficient 0.001, clip ratio 10, 16 samples for each of 32 questions per step, temperature 1,
the reference model reset to the policy every 400 steps, each rollout split into 16 minibatches
for one inner epoch. Token budgets fit the base (``budget``): DeepSeek-R1's 32,768 new tokens
after a 1,024-token prompt on the long-context bases (Qwen2.5-1.5B/7B/32B and Llama 3.1/3.3 have
131,072 positions), and 1,024 prompt + 3,072 new tokens on Qwen2.5-Math-1.5B/7B, whose context is
4,096 positions; the held-out evaluation samples up to the same budget. A budget the model cannot
hold stops the run at start-up, naming the field to change. Hardware: a TPU v5p-64 or 8×H100 for
7B (check first: ``python launch/aot.py --config=experiments/r1_zero.py:model=qwen2.5-math-7b
--topology=v5p:4x4x2``); days of training. Expected: AIME 2024 pass@1 rising through training as
in the paper's Figure 2 (DeepSeek-R1-Zero on the 671B base: 15.6% → 71.0%). Other arguments:
``seed``, ``steps``, ``beta``, ``lr``, ``group``, ``prompts``, ``max_new_tokens`` (the rollout's),
``mesh`` (fsdp, data or tensor over all devices), ``expert`` (the expert-parallel mesh axis of a
mixture of experts: the experts and the batch split over it).

Mixtures of experts. ``model=tiny-moe`` is the tiny run on a Qwen3-MoE-shaped base (8 experts,
top-2, the first layer dense; experiments/assets/tiny_moe_base, pretrained automatically if
missing by ``experiments/pretrain_tiny.py:moe``, ~25 minutes), everything else as the tiny
default; its metrics add the experts' load balance (``moe/aux_loss``, ``moe/max_over_mean_load``,
``r1jax/rl/moe_balance.py``); ``--config.grpo.router_replay=True`` replays the rollout's expert
choices in every training forward (router replay, against train/inference routing mismatch).
Measured (README, "R1-Zero on a tiny mixture of experts"; 2 shared
cores, 12 minutes): the format learned (62.5% → 100%) but held-out pass@1 14.0% → 4.0%, on a
base far weaker than the dense one (600 pretraining steps), its routing unbalanced throughout
(busiest expert 2.8× the mean). ``model=qwen3-30b-a3b`` is the paper's recipe on
Qwen3-30B-A3B-Base (128 experts, top-8) with an expert axis of 8 (``expert=``) and FSDP over the
rest; check the fit first:
``python launch/aot.py --config=experiments/r1_zero.py:model=qwen3-30b-a3b --topology=v5p:4x4x2``.
``model=deepseek-v2-lite`` is the recipe on a DeepSeek-V2-Lite-shaped base (15.7B parameters,
Multi-head Latent Attention with a 512-wide latent cache, 64 routed experts top-6 plus 2 shared,
the first layer dense), also with an expert axis of 8 (8 experts per device) and FSDP over the
rest. Its config.json counts 163,840 positions (YaRN's 40 × 4,096) but the model was trained to
32k, so its budget is 1,024 + 31,744 tokens. Its rollout pages the latent cache (576 values per
token per layer). The checkpoint's config.json must say ``model_type:
deepseek_v3`` with ``scoring_func: softmax`` and ``topk_method: greedy``, as r1jax writes this
architecture (the released one says ``deepseek_v2``, which the loader refuses).
"""
import os

import ml_collections
from ml_collections.config_dict import placeholder

from r1jax.configdict import parse_variant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BASE = os.path.join(ROOT, "experiments", "assets", "tiny_base")
PRETRAIN = os.path.join(ROOT, "experiments", "pretrain_tiny.py")
TINY_MOE_BASE = os.path.join(ROOT, "experiments", "assets", "tiny_moe_base")

_ARGS = {"model": str, "ckpt": str, "train": str, "test": str, "seed": int, "steps": int,
         "beta": float, "lr": float, "group": int, "prompts": int, "max_new_tokens": int,
         "mesh": str, "expert": int}


def parse_arg(arg):
    return parse_variant(arg, _ARGS, "experiments/r1_zero.py")


def base():
    """Every setting a run has, so any of them can be overridden from the command line."""
    return dict(
        name="r1_zero", steps=60, prompts_per_step=16, dynamic_sampling=False, max_refills=4,
        # Optional settings are typed placeholders (None until set) so flags can override them.
        model=dict(checkpoint=placeholder(str), preset=placeholder(str),
                   tokenizer=placeholder(str), pretrain_config=placeholder(str),
                   dtype=placeholder(str), remat="none"),
        data=dict(train="synthetic:arithmetic", test="synthetic:arithmetic", difficulty=3,
                  num_train=20_000, num_test=200, seed=0, template="r1_zero",
                  max_prompt_tokens=256, skip_bad_lines=False),
        rollout=dict(max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0,
                     stop_strings=("</answer>",),
                     # lockstep for short fixed budgets; paged for long, long-tailed ones
                     engine=dict(kind="lockstep", decode_slots=0, page_size=16, kv_pages=0)),
        grpo=dict(
            group_size=8, temperature=1.0, advantage_mode="grpo", advantage_eps=1e-4,
            num_minibatches=1, num_iterations=1, num_microbatches=1, old_logprobs="recompute",
            ref_update_interval=placeholder(int), logprob_impl="auto", max_consecutive_skips=5,
            router_replay=False,  # mixtures of experts: replay the rollout's routing in training
            loss=dict(epsilon_low=0.2, epsilon_high=0.2, dual_clip=placeholder(float), beta=0.0,
                      kl_estimator="k3", loss_agg="seq-mean-token-mean", ratio_level="token",
                      loss_norm_length=placeholder(int), tis_cap=placeholder(float),
                      moe_aux_coef=0.0),
            optim=dict(learning_rate=1e-6, warmup_steps=0, schedule="constant", total_steps=1000,
                       final_lr_fraction=0.1, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0,
                       max_grad_norm=1.0)),
        rewards=dict(weights={"accuracy": 1.0, "format": 1.0}, reward_model=placeholder(str),
                     overlong_max_tokens=placeholder(int),
                     overlong_cache_tokens=0, num_workers=2, timeout_s=30.0),
        eval=dict(every=20, num_problems=200, num_samples=2, temperature=0.6, top_p=0.95,
                  max_new_tokens=64),
        checkpoint=dict(every=10, max_to_keep=2, keep_best=False),
        logging=dict(every=1, samples_every=10, num_samples=2, tensorboard=True,
                     progress_bar=True),
        mesh=dict(data=1, fsdp=-1, tensor=1, expert=1),
    )


def tiny(values):
    """The CPU run: the tiny base model on synthetic arithmetic chains (``ckpt=`` swaps in another
    small Hugging Face-format checkpoint)."""
    model = dict(checkpoint=TINY_BASE, pretrain_config=PRETRAIN)
    if values.get("model") == "tiny-moe":
        model = dict(checkpoint=TINY_MOE_BASE, pretrain_config=PRETRAIN + ":moe")
    if "ckpt" in values:
        model = dict(checkpoint=values["ckpt"], pretrain_config=None)
    return dict(
        name="r1_zero_tiny", steps=60, prompts_per_step=16,
        model=model,
        # Trained on 2- and 3-step chains alike, evaluated on held-out 3-step chains: the base
        # answers after one step, and a full 2-step chain is found by chance far more often than a
        # 3-step one, so every seed gets reward for continuing the chain early (with 3-step
        # training chains alone one seed in two never left the one-step answer in 60 steps).
        # Prompts are at most 122 tokens (156 with the test suite's smaller vocabulary); 192 + 64
        # new tokens fit a 256-position model, which a ``ckpt=`` swap may bring.
        data=dict(train="synthetic:arithmetic:d2+synthetic:arithmetic:d3", difficulty=3,
                  num_train=20_000, num_test=200, max_prompt_tokens=192),
        rollout=dict(max_new_tokens=64, temperature=1.0),
        grpo=dict(
            group_size=8, temperature=1.0,
            # Token-level aggregation keeps a long chain's tokens from being down-weighted by 1/|o|,
            # which in the prototype let a learned format collapse the reasoning to one token.
            loss=dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.0, loss_agg="token-mean"),
            optim=dict(learning_rate=2e-4, warmup_steps=3, b2=0.99, weight_decay=0.0,
                       max_grad_norm=1.0)),
        rewards=dict(weights={"accuracy": 1.0, "format": 0.2}, num_workers=2),
        eval=dict(every=20, num_problems=200, num_samples=2, max_new_tokens=64),
        checkpoint=dict(every=10, max_to_keep=2),
        mesh=dict(data=-1, fsdp=1, tensor=1),
    )


HF_REPOS = {"qwen2.5-math-1.5b": "Qwen2.5-Math-1.5B", "qwen2.5-math-7b": "Qwen2.5-Math-7B",
            "qwen2.5-1.5b": "Qwen2.5-1.5B", "qwen2.5-7b": "Qwen2.5-7B",
            "qwen2.5-32b": "Qwen2.5-32B", "llama3.1-8b": "Llama-3.1-8B",
            "llama3.3-70b": "Llama-3.3-70B-Instruct", "qwen3-30b-a3b": "Qwen3-30B-A3B-Base",
            "deepseek-v2-lite": "DeepSeek-V2-Lite"}

# Positions of each base (max_position_embeddings of the presets in r1jax/models/config.py, which
# are the checkpoints' config.json values; tests/test_experiments.py checks they agree).
CONTEXT = {"qwen2.5-math-1.5b": 4096, "qwen2.5-math-7b": 4096, "qwen2.5-1.5b": 131_072,
           "qwen2.5-7b": 131_072, "qwen2.5-32b": 131_072, "llama3.1-8b": 131_072,
           "llama3.3-70b": 131_072, "qwen3-30b-a3b": 40_960, "deepseek-v2-lite": 163_840}
# Where a base was trained on fewer positions than its config.json allows: DeepSeek-V2-Lite's
# 163,840 are YaRN's 40 × 4,096 stretch, but its long-context training went to 32k (model card).
TRAINED_CONTEXT = {"deepseek-v2-lite": 32_768}
PROMPT_TOKENS = 1024
PAPER_NEW_TOKENS = 32_768  # DeepSeek-R1's generation budget


def budget(model):
    """``(prompt tokens, new tokens)`` for a base: the paper's 32,768 new tokens where the context
    holds them after the prompt, else the rest of the context (Qwen2.5-Math: 1,024 + 3,072;
    DeepSeek-V2-Lite, trained to 32k: 1,024 + 31,744)."""
    context = min(CONTEXT[model], TRAINED_CONTEXT.get(model, CONTEXT[model]))
    return PROMPT_TOKENS, min(PAPER_NEW_TOKENS, context - PROMPT_TOKENS)


def paper(model, values):
    """DeepSeek-R1-Zero's GRPO settings on a real base model."""
    if model not in HF_REPOS:
        raise ValueError(f"experiments/r1_zero.py: model={model!r}; choose tiny, tiny-moe or one of "
                         f"{sorted(HF_REPOS)}")
    prompt_tokens, new_tokens = budget(model)
    return dict(
        name=f"r1_zero_{model}", steps=8000, prompts_per_step=32,
        model=dict(checkpoint=values.get("ckpt", f"/models/{HF_REPOS[model]}"), preset=model,
                   dtype="bfloat16", remat="full"),
        data=dict(train=values.get("train", "/data/train.jsonl"),
                  test=values.get("test", "/data/math500.jsonl"), num_test=500,
                  template="r1_zero", max_prompt_tokens=prompt_tokens),
        # Thousands of tokens, long-tailed: continuous batching over a paged cache (MLA's
        # latent cache for DeepSeek models).
        rollout=dict(max_new_tokens=new_tokens, temperature=1.0,
                     engine=dict(kind="paged", page_size=64)),
        grpo=dict(
            group_size=16, temperature=1.0, num_minibatches=16, num_iterations=1,
            num_microbatches=1, ref_update_interval=400,
            loss=dict(epsilon_low=10.0, epsilon_high=10.0, beta=0.001,
                      kl_estimator="k3", loss_agg="seq-mean-token-mean"),
            optim=dict(learning_rate=3e-6, warmup_steps=0, b2=0.95, weight_decay=0.1,
                       max_grad_norm=1.0)),
        rewards=dict(weights={"accuracy": 1.0, "format": 1.0}, num_workers=16, timeout_s=60.0),
        eval=dict(every=200, num_problems=500, num_samples=4, temperature=0.6, top_p=0.95,
                  max_new_tokens=new_tokens),
        checkpoint=dict(every=50, max_to_keep=3, keep_best=True),
        # Mixtures of experts: their experts (and the batch) over an expert axis, FSDP over the
        # rest; 8 splits Qwen3-30B-A3B's 128 experts into groups of 16, DeepSeek-V2-Lite's 64
        # into groups of 8.
        mesh=dict(data=1, fsdp=-1, tensor=1, expert=8 if model in MOE_MODELS else 1),
    )


MOE_MODELS = ("qwen3-30b-a3b", "deepseek-v2-lite")


def _merge(into, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "weights":
            _merge(into[key], value)
        elif hasattr(into.get(key), "set"):  # a typed placeholder keeps its type
            into[key].set(value)
        else:
            into[key] = value
    return into


def get_config(arg=None):
    values = parse_arg(arg)
    model = values.get("model", "tiny")
    is_tiny = model in ("tiny", "tiny-moe")
    settings = _merge(base(), tiny(values) if is_tiny else paper(model, values))
    config = ml_collections.ConfigDict(dict(job="grpo", seed=values.get("seed", 0), **settings))
    for key, field in (("steps", "steps"), ("prompts", "prompts_per_step"),
                       ("group", "grpo.group_size"), ("beta", "grpo.loss.beta"),
                       ("lr", "grpo.optim.learning_rate"),
                       ("max_new_tokens", "rollout.max_new_tokens")):
        if key in values:
            config.update_from_flattened_dict({field: values[key]})
    if "mesh" in values:
        config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1,
                                                 "expert": config.mesh.expert})
        config.mesh[values["mesh"]] = -1
    if "expert" in values:
        config.mesh.expert = values["expert"]
    if model == "tiny-moe":
        config.name = "r1_zero_tiny_moe"
    if is_tiny and "seed" in values:
        config.name = f"{config.name}_seed{values['seed']}"
    return config
