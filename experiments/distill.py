r"""Distillation (DeepSeek-R1 §2.4): SFT of a smaller student on a reasoning teacher's traces,
against the same student trained with GRPO for the same wall time.

Tiny default:

    python launch/run.py --config=experiments/distill.py

Hardware: a CPU. Time: about 8 minutes on 2 cores (measured: 7 min 58 s). Stages, each in
runs/distill/<stage>/ and skipped when rerun after it finished:
  1. teacher        the R1-Zero quickstart run (experiments/r1_zero.py) from the tiny base,
                    40 steps (``teacher=DIR`` uses an exported checkpoint instead, e.g.
                    ``teacher=runs/r1_zero/export``, and skips this RL);
  2. traces         k samples per training prompt from the teacher at temperature 0.7, kept if
                    correct and well-formed (runs/distill/traces/out/data.jsonl, stats.json);
  3. student_sft    SFT of the student — a smaller *Llama-style* decoder pretrained on the same
                    corpus (experiments/assets/tiny_student, ``pretrain_tiny.py:student``) — on
                    those traces, for ``budget`` seconds at most (default 120);
  4. student_grpo   the same student trained with R1-Zero's GRPO for the same ``budget`` seconds;
  5. eval_*         teacher, student base, SFT student and GRPO student on the same held-out
                    problems with the same settings (temperature 0.6, top-p 0.95, 2 samples).
Measured (README): teacher 80.8% held-out pass@1; student base 0.5%; SFT student 62.8% (format
100%) after 90 s of SFT on 1,364 traces; GRPO student 0.5% after 124 s of GRPO. Distillation beats
RL on the small model at equal compute, as in the paper's §4.1; the gap is extreme here because
the student never writes the template's tags, so neither rule reward ever fires for it.

Real scale: ``experiments/distill.py:student=qwen2.5-math-1.5b,
student_ckpt=/models/Qwen2.5-Math-1.5B,teacher=/ckpts/r1,train=/data/math_train.jsonl,test=/data/math500.jsonl`` — the paper's students
(Qwen2.5-Math-1.5B/7B, Qwen2.5-32B, Llama-3.1-8B, Llama-3.3-70B-Instruct: presets qwen2.5-math-1.5b,
qwen2.5-math-7b, qwen2.5-32b, llama3.1-8b, llama3.3-70b; also qwen2.5-1.5b/7b) fine-tuned with SFT
only (2 epochs, cosine 5e-5 → 5e-6) on the teacher's filtered samples; no RL stage (``budget``
does not apply). The token budget is the student's, as in experiments/r1_zero.py: traces of up
to 32,768 new tokens after a 1,024-token prompt for the long-context students (SFT rows of
33,792), up to 3,072 for Qwen2.5-Math's 4,096 positions (rows of 4,096), and the held-out
MATH-500 evaluation samples up to the same. The teacher must hold that budget too (checked when
its stage starts). Hardware: TPU pods / GPU clusters.
"""
import os

import ml_collections

from r1jax.configdict import load_experiment, parse_variant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDENT = os.path.join(ROOT, "experiments", "assets", "tiny_student")
PRETRAIN = os.path.join(ROOT, "experiments", "pretrain_tiny.py")
MESH = dict(data=-1, fsdp=1, tensor=1)

_ARGS = {"teacher": str, "student": str, "student_ckpt": str, "train": str, "test": str,
         "budget": float, "seed": int}


def parse_arg(arg):
    return parse_variant(arg, _ARGS, "experiments/distill.py")


def _experiment(name, arg=None):
    """Another experiment's config as a dict (``arg`` as after the colon of ``--config``)."""
    path = os.path.join(ROOT, "experiments", f"{name}.py")
    return load_experiment(f"{path}:{arg}" if arg else path).to_dict()


def _eval(ckpt, *, max_new_tokens=64, **extra):
    config = _experiment("eval", f"ckpt={ckpt},bench=arithmetic,difficulty=3,num_problems=200,"
                                 f"k=2,temperature=0.6,top_p=0.95,max_new_tokens={max_new_tokens},"
                                 "batch_size=100,workers=2,mesh=data")
    config["eval"].update(progress=False, **extra)
    return config


def tiny(values):
    seed, budget = values.get("seed", 0), values.get("budget", 120.0)
    student_model = dict(checkpoint=STUDENT, pretrain_config=PRETRAIN + ":student")
    teacher = values.get("teacher", "{workdir}/teacher/export")
    stages = {}
    if "teacher" not in values:
        # R1-Zero's quickstart run, shortened: its held-out pass@1 has mostly risen by step 20.
        stages["teacher"] = _experiment("r1_zero", f"seed={seed},steps=40")
        stages["teacher"].update(name="distill_teacher")
        stages["teacher"]["eval"]["every"] = 0
    stages["traces"] = dict(
        job="traces", name="distill_traces", seed=seed, model=dict(checkpoint=teacher),
        output_dir="{workdir}/traces/out",
        data=dict(train="synthetic:arithmetic", difficulty=3, num_train=1500),
        sampling=dict(num_samples=4, temperature=0.7, top_p=0.95, max_new_tokens=64,
                      batch_prompts=96),
        filters=dict(require_correct=True, require_format=True, min_language=0.95,
                     max_per_prompt=2),
        mesh=MESH)
    stages["student_sft"] = dict(
        job="sft", name="distill_student_sft", seed=seed, model=student_model,
        data=dict(train="{workdir}/traces/out/data.jsonl", test=None, seq_len=256),
        sft=dict(optim=dict(learning_rate=1e-3, schedule="cosine", warmup_steps=5,
                            final_lr_fraction=0.1)),
        epochs=3, batch_rows=16, eval_every=0, checkpoint_every=50, time_budget_s=budget,
        mesh=MESH)
    grpo = _experiment("r1_zero", f"seed={seed}")
    grpo.update(name="distill_student_grpo", steps=1000, time_budget_s=budget)
    grpo["model"].update(student_model)
    grpo["eval"]["every"] = 0
    stages["student_grpo"] = grpo
    stages["eval_teacher"] = _eval(teacher)
    stages["eval_student_base"] = _eval(STUDENT)
    stages["eval_student_sft"] = _eval("{workdir}/student_sft/export")
    stages["eval_student_grpo"] = _eval("{workdir}/student_grpo/export")
    return dict(order=tuple(stages), stages=stages)


def paper(values):
    """SFT-only distillation of a real student on a teacher's filtered samples, at the student's
    token budget (R1-Zero's for the same base)."""
    student = values["student"]
    ckpt = values.get("student_ckpt", f"/models/{student}")
    train = values.get("train", "/data/train.jsonl")
    seed = values.get("seed", 0)
    try:  # the student's token budget is R1-Zero's for the same base
        budget = _experiment("r1_zero", f"model={student}")
    except ValueError as e:
        raise ValueError(f"experiments/distill.py: student={student!r}: {e}") from None
    prompt_tokens = budget["data"]["max_prompt_tokens"]
    new_tokens = budget["rollout"]["max_new_tokens"]
    real = dict(data=1, fsdp=-1, tensor=1)
    stages = dict(
        traces=dict(
            job="traces", name="distill_traces", seed=seed,
            model=dict(checkpoint=values.get("teacher", "/ckpts/r1")),
            output_dir="{workdir}/traces/out",
            data=dict(train=train, num_train=10_000_000, max_prompt_tokens=prompt_tokens),
            sampling=dict(num_samples=4, temperature=0.6, top_p=0.95, max_new_tokens=new_tokens,
                          batch_prompts=64, engine=dict(kind="paged", page_size=64)),
            filters=dict(require_correct=True, require_format=True, min_language=0.95,
                         max_tokens=new_tokens),
            mesh=real),
        student_sft=dict(
            job="sft", name=f"distill_{student}", seed=seed,
            model=dict(checkpoint=ckpt, preset=student, dtype="bfloat16", remat="full"),
            data=dict(train="{workdir}/traces/out/data.jsonl", test=None,
                      seq_len=prompt_tokens + new_tokens),
            # Microbatches of 32 rows: one row per device on up to 32 batch devices.
            sft=dict(optim=dict(learning_rate=5e-5, schedule="cosine", warmup_steps=100,
                                final_lr_fraction=0.1, weight_decay=0.1), num_microbatches=4),
            epochs=2, batch_rows=128, eval_every=0, checkpoint_every=500, mesh=real),
        eval_student=_experiment("eval", "ckpt={workdir}/student_sft/export,bench=math500,data="
                                 + values.get("test", "/data/math500.jsonl")
                                 + f",max_new_tokens={new_tokens}"),
    )
    return dict(order=tuple(stages), stages=stages)


def get_config(arg=None):
    values = parse_arg(arg)
    settings = paper(values) if "student" in values else tiny(values)
    return ml_collections.ConfigDict(dict(job="stages", **settings))
