r"""Pretrain the tiny base model — the R1-Zero analogue of DeepSeek-V3-Base — on a synthetic corpus.

Command (writes the committed asset; deterministic: the same command gives the same bytes):

    JAX_PLATFORMS=cpu python launch/run.py --config=experiments/pretrain_tiny.py \
        --workdir=runs/pretrain_tiny

Hardware and time: a 2-core CPU, about 25 minutes alone (40 when shared) (1,600 steps of 16 × 256 tokens, ~6.5M tokens,
a 0.9M-parameter qwen2-style decoder: hidden 128, 4 layers, 4 heads / 2 KV heads, tied
embeddings, a 1,024-token sentencepiece vocabulary where every integer 0–100 is one token).

Expected result (``experiments/assets/tiny_base/README.md`` has the measured numbers): on held-out
arithmetic chains, high latent skill when asked in a corpus-native format ("Problem: … Work:"),
but under the R1-Zero template at T=1 a minority of well-formed ``<think>…</think><answer>…
</answer>`` replies and a pass@1 well below 50% — what GRPO then has to improve. The corpus never
contains the template, a think/answer tag or a User:/Assistant: turn, nor any held-out problem.

Output: ``experiments/assets/tiny_base/`` (``config.json``, ``model.safetensors``,
``tokenizer.model``, ``SHA256SUMS``); logs, checkpoints and ``summary.json`` (the probe) in the work
directory.

Variants (``key=value`` pairs, comma-separated, after a colon):
  ``experiments/pretrain_tiny.py:smoke`` — a miniature run (tiny corpus, model and step count)
      in seconds, written to ``<workdir>/base``; what the tests run.
  ``experiments/pretrain_tiny.py:student`` — the distillation student (``experiments/distill.py``):
      a smaller Llama-style decoder, 800 steps, written to ``experiments/assets/tiny_student/``.
  ``experiments/pretrain_tiny.py:moe`` — the base of the tiny MoE R1-Zero
      (``experiments/r1_zero.py:model=tiny-moe``): the ``tiny-moe`` preset (Qwen3-MoE-shaped,
      8 experts, top-2, first layer dense, 1.4M parameters), 600 steps (a MoE step costs about
      twice a dense one on a CPU; ~25 minutes on 2 shared cores), written to
      ``experiments/assets/tiny_moe_base/``.
  ``steps=N``, ``out=DIR`` (``out=`` empty: ``<workdir>/base``), ``seed=N``.
"""
import ml_collections

from r1jax.configdict import parse_variant

ASSET_DIR = "experiments/assets/tiny_base"
STUDENT_DIR = "experiments/assets/tiny_student"
MOE_DIR = "experiments/assets/tiny_moe_base"
# The distillation student: a smaller Llama-style decoder (no q/k/v bias, untied embeddings,
# 3 layers of width 96, one KV head), pretrained on the same corpus for fewer steps.
STUDENT = dict(model_type="llama", qkv_bias=False, tie_embeddings=False, hidden_size=96,
               intermediate_size=256, num_layers=3, num_heads=3, num_kv_heads=1, head_dim=32,
               scan_unroll=3)


def _parse(arg):
    return parse_variant(arg, {"steps": int, "seed": int, "out": str},
                         "experiments/pretrain_tiny.py", flags=("smoke", "student", "moe"))


def get_config(arg=None):
    args = _parse(arg)
    config = ml_collections.ConfigDict()
    config.job = "pretrain"
    config.seed = args.get("seed", 0)
    config.output_dir = ASSET_DIR

    config.corpus = ml_collections.ConfigDict(dict(
        seed=0,
        difficulties=(1, 2, 3),
        difficulty_weights=(1.0, 3.0, 2.0),
        test_fraction=0.1,  # = SyntheticConfig.test_fraction of the RL and eval sets
        max_integer=100,
        mix=dict(facts=0.2, worked=0.3, direct=0.07, tagged=0.38, prose=0.05),
        tagged_arithmetic=0.7,
        brief_work=0.2,
        follow_rate=0.4,
    ))
    config.tokenizer = ml_collections.ConfigDict(dict(vocab_size=1024, num_docs=50_000))
    config.model = ml_collections.ConfigDict(dict(preset="tiny", overrides={}))
    config.train = ml_collections.ConfigDict(dict(
        steps=1600, batch_size=16, seq_len=256, learning_rate=3e-3, warmup_steps=100,
        final_lr_fraction=0.1, weight_decay=0.01, b2=0.98, max_grad_norm=1.0,
        docs_per_chunk=4096, log_every=25, eval_every=400,
    ))
    config.probe = ml_collections.ConfigDict(dict(
        difficulties=(2, 3), num_problems=128, num_samples=4, max_new_tokens=96,
        periodic_problems=32,
    ))

    if args.get("student"):
        config.output_dir = STUDENT_DIR
        config.model.overrides = dict(STUDENT)
        config.train.update(steps=800, warmup_steps=50, eval_every=200)
    if args.get("moe"):
        config.output_dir = MOE_DIR
        config.model.preset = "tiny-moe"
        config.train.update(steps=600, warmup_steps=50, eval_every=300)
    if args.get("smoke"):
        config.output_dir = ""
        config.tokenizer.num_docs = 1000
        config.tokenizer.vocab_size = 512
        config.model.overrides = dict(hidden_size=32, intermediate_size=64, num_layers=2,
                                      head_dim=8)
        config.train.update(steps=4, batch_size=4, seq_len=128, warmup_steps=1,
                            docs_per_chunk=64, log_every=2, eval_every=1000)
        config.probe.update(difficulties=(2,), num_problems=2, num_samples=2,
                            max_new_tokens=8, periodic_problems=0)
    if "steps" in args:
        config.train.steps = args["steps"]
        config.train.warmup_steps = min(config.train.warmup_steps, max(args["steps"] // 10, 1))
    if "out" in args:
        config.output_dir = args["out"]
    return config
