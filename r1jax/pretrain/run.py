"""Pretraining the tiny base model: corpus → tokenizer → packed next-token training → checkpoint.

``run(config, workdir)`` is what ``launch/run.py`` calls for ``job = "pretrain"``:

1. train a sentencepiece tokenizer on the corpus' own ``tokenizer`` stream (integers one token);
2. train the decoder with ``r1jax.sft.sft_step`` (loss on every token) on packed rows of freshly
   generated documents — chunk k of the ``train`` stream is generated, packed and shuffled from
   its index alone, so the run is a pure function of the config;
3. write a Hugging Face checkpoint (``config.json`` + ``model.safetensors``), ``tokenizer.model``,
   ``SHA256SUMS`` and ``probe.json`` (latent skill and R1-Zero-template behaviour on held-out
   test problems) to ``output_dir``; logs go to ``<workdir>/pretrain_log.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import numpy as np

from r1jax import hf, models, sft
from r1jax.configdict import to_dict
from r1jax.data import synthetic
from r1jax.pretrain import corpus as corpus_lib
from r1jax.pretrain import probe
from r1jax.pretrain.config import PretrainConfig
from r1jax.rl.config import OptimConfig
from r1jax.optim import init_train_state, make_optimizer
from r1jax.tokenizer import Tokenizer, train_sentencepiece

CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.model")


def _log(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    print("[pretrain] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in record.items()), flush=True)


def build_tokenizer(cfg: PretrainConfig, corpus_cfg: corpus_lib.CorpusConfig, workdir: str
                    ) -> Tokenizer:
    docs = corpus_lib.chunk(corpus_cfg, 0, cfg.tokenizer.num_docs, stream="tokenizer")
    return train_sentencepiece(docs, os.path.join(workdir, "tokenizer"), cfg.tokenizer.vocab_size,
                               user_defined_symbols=corpus_lib.integer_symbols(
                                   corpus_cfg.max_integer))


def word_pieces(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The tokenizer's word-internal letter pieces (no word-start marker), in id order: random tag
    names are built from them so that every piece a name can split into is seen being copied."""
    pieces = (tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size))
    return tuple(p for p in pieces if p.isascii() and p.isalpha() and p.islower())


def packed_chunk(cfg: PretrainConfig, corpus_cfg, tokenizer: Tokenizer, index: int,
                 stream: str = "train") -> sft.PackedRows:
    """Chunk ``index``: documents (each ending with EOS) packed into rows, rows shuffled."""
    docs = corpus_lib.chunk(corpus_cfg, index, cfg.train.docs_per_chunk, stream=stream)
    examples = [((), tokenizer.encode(d, add_eos=True)) for d in docs]
    rows = sft.pack_examples(examples, cfg.train.seq_len, loss_on="all", pad_id=tokenizer.pad_id,
                             overflow="truncate")
    order = np.random.default_rng([cfg.seed, index]).permutation(rows.num_rows)
    return sft.PackedRows(*(getattr(rows, f)[order] for f in sft.PackedRows.__dataclass_fields__))


def batches(cfg: PretrainConfig, corpus_cfg, tokenizer):
    """An endless stream of ``[batch_size, seq_len]`` batches (whole batches only)."""
    index = 0
    while True:
        rows = packed_chunk(cfg, corpus_cfg, tokenizer, index)
        yield from sft.iterate_batches(rows, cfg.train.batch_size, drop_remainder=True)
        index += 1


def model_config(cfg: PretrainConfig, tokenizer: Tokenizer) -> models.ModelConfig:
    return models.get_config(cfg.model.preset, **dict(cfg.model.overrides)).replace(
        vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id)


def test_problems(cfg: PretrainConfig, difficulty: int, count: int):
    """Held-out problems: the test split at the corpus' ``test_fraction``, never in the corpus."""
    return synthetic.generate(synthetic.SyntheticConfig(
        task="arithmetic", difficulty=difficulty, num_examples=count, split="test",
        test_fraction=cfg.corpus.test_fraction, unique=True, seed=0))


def measure(cfg: PretrainConfig, params, model_cfg, tokenizer, num_problems: int, *,
            full: bool) -> dict:
    """Latent skill (greedy; and at T=1 when ``full``) and R1-Zero-template behaviour."""
    out = {}
    key = jax.random.key(cfg.seed + 1)
    for d in cfg.probe.difficulties:
        problems = test_problems(cfg, d, num_problems)
        greedy = probe.latent_skill(params, model_cfg, tokenizer, problems, rng=key)
        out[f"d{d}/latent_greedy"] = greedy["accuracy"]
        if full:
            sampled = probe.latent_skill(params, model_cfg, tokenizer, problems, rng=key,
                                         temperature=1.0, num_samples=cfg.probe.num_samples)
            out[f"d{d}/latent_t1"] = sampled["accuracy"]
            out[f"d{d}/latent_example"] = greedy["samples"][0]
        tmpl = probe.template_behaviour(
            params, model_cfg, tokenizer, problems, rng=key,
            num_samples=cfg.probe.num_samples if full else 2,
            max_new_tokens=cfg.probe.max_new_tokens)
        for name in ("pass@1", "format_rate", "answer_tag_rate", "accuracy_when_formatted",
                     "mean_length"):
            out[f"d{d}/template_{name}"] = tmpl[name]
        out[f"d{d}/template_examples"] = tmpl["samples"] if full else tmpl["samples"][:2]
    return out


def export_tokenizer(src: str, dst: str) -> None:
    """Copy a sentencepiece model without the training-time path it records (``model_prefix``),
    so that the same config gives the same bytes whatever the work directory."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(src, "rb") as f:
        proto.ParseFromString(f.read())
    proto.trainer_spec.model_prefix = "tokenizer"
    with open(dst, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))


def sha256sums(directory: str, names=CHECKPOINT_FILES) -> str:
    lines = []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {name}")
    return "\n".join(lines) + "\n"


def run(config, workdir: str) -> dict:
    """Pretrain the base model described by ``config`` (a ConfigDict or ``PretrainConfig``)."""
    cfg = config if isinstance(config, PretrainConfig) else PretrainConfig.from_config(config)
    os.makedirs(workdir, exist_ok=True)
    output_dir = cfg.output_dir or os.path.join(workdir, "base")
    log_path = os.path.join(workdir, "pretrain_log.jsonl")
    if os.path.exists(log_path):
        os.remove(log_path)
    t0 = time.time()

    # ---------------------------------------------------------------- tokenizer and model
    tokenizer = build_tokenizer(cfg, cfg.corpus.build(), workdir)
    corpus_cfg = cfg.corpus.build(tag_pieces=word_pieces(tokenizer))
    model_cfg = model_config(cfg, tokenizer)
    train = cfg.train
    optim = OptimConfig(learning_rate=train.learning_rate, warmup_steps=train.warmup_steps,
                        schedule="cosine", total_steps=train.steps,
                        final_lr_fraction=train.final_lr_fraction, b2=train.b2,
                        weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm)
    optimizer = make_optimizer(optim)
    params = jax.jit(lambda k: models.init(model_cfg, k))(jax.random.key(cfg.seed))
    state = init_train_state(params, optimizer)
    step_fn = sft.make_sft_step(sft.SFTConfig(optim=optim), model_cfg, optimizer, state)
    heldout = sft.SFTBatch.from_rows(next(sft.iterate_batches(
        packed_chunk(cfg, corpus_cfg, tokenizer, 0, stream="heldout"), train.batch_size)))
    _log(log_path, {"event": "start", "params": models.count_params(model_cfg),
                    "vocab": tokenizer.vocab_size, "setup_s": round(time.time() - t0, 1)})

    # ---------------------------------------------------------------- training
    t_train, tokens, losses = time.time(), 0, []
    stream = batches(cfg, corpus_cfg, tokenizer)
    for step in range(1, train.steps + 1):
        rows = next(stream)
        state, metrics = step_fn(state, sft.SFTBatch.from_rows(rows))
        tokens += int((rows.segment_ids > 0).sum())
        losses.append(metrics["loss"])
        if step % train.log_every == 0 or step == train.steps:
            elapsed = time.time() - t_train
            loss_sum, weight = sft.eval_loss(state.params, heldout, model_cfg=model_cfg)
            _log(log_path, {"step": step, "loss": float(np.mean(jax.device_get(losses))),
                            "heldout_loss": float(loss_sum / weight),
                            "lr": float(metrics["learning_rate"]),
                            "grad_norm": float(metrics["grad_norm"]),
                            "skipped": int(state.skipped_updates), "tokens": tokens,
                            "tok_per_s": round(tokens / elapsed), "elapsed_s": round(elapsed),
                            "eta_s": round(elapsed / step * (train.steps - step))})
            losses = []
        if step % train.eval_every == 0 and step < train.steps and cfg.probe.periodic_problems:
            probe_metrics = measure(cfg, state.params, model_cfg, tokenizer,
                                    cfg.probe.periodic_problems, full=False)
            _log(log_path, {"step": step, **probe_metrics})

    # ---------------------------------------------------------------- export and measure
    params = state.params
    os.makedirs(output_dir, exist_ok=True)
    hf.save_pretrained(output_dir, model_cfg, params)
    export_tokenizer(tokenizer.path, os.path.join(output_dir, "tokenizer.model"))
    with open(os.path.join(output_dir, "SHA256SUMS"), "w", encoding="utf-8") as f:
        f.write(sha256sums(output_dir))
    train_s = time.time() - t_train
    result = (measure(cfg, params, model_cfg, tokenizer, cfg.probe.num_problems, full=True)
              if cfg.probe.num_problems else {})
    summary = {"train_s": round(train_s), "total_s": round(time.time() - t0), "tokens": tokens,
               "params": models.count_params(model_cfg), "probe": result,
               "config": to_dict(cfg)}
    with open(os.path.join(workdir, "pretrain_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    _log(log_path, {"event": "done", "output_dir": output_dir,
                    **{k: v for k, v in result.items() if isinstance(v, float)},
                    "total_s": summary["total_s"]})
    return summary
