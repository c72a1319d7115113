"""Pretraining the tiny base model: corpus → tokenizer → packed next-token training → checkpoint.

``run(config, workdir)`` is what ``launch/run.py`` calls for ``job = "pretrain"``:

1. train a sentencepiece tokenizer on the corpus' own ``tokenizer`` stream (integers one token);
2. train the decoder with ``r1jax.sft.sft_step`` (loss on every token) on packed rows of freshly
   generated documents — chunk k of the ``train`` stream is generated, packed and shuffled from
   its index alone, so the run is a pure function of the config;
3. write a Hugging Face checkpoint (``config.json`` + ``model.safetensors``), ``tokenizer.model``
   and ``SHA256SUMS`` to ``output_dir``, and measure the base (latent skill and R1-Zero-template
   behaviour on held-out test problems) into ``<workdir>/summary.json``; logs go to
   ``<workdir>/pretrain_log.jsonl``.

The run skeleton (``r1jax.training_run``) checkpoints the train state and the stream's position
every ``train.checkpoint_every`` steps and on SIGTERM; a rerun resumes exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import numpy as np

from r1jax import hf, models, sft, training_run
from r1jax.data import synthetic
from r1jax.metrics import truncate_after
from r1jax.optim import OptimConfig, init_train_state, make_optimizer
from r1jax.pretrain import corpus as corpus_lib
from r1jax.pretrain import probe
from r1jax.pretrain.config import PretrainConfig
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


class BatchStream:
    """An endless stream of ``[batch_size, seq_len]`` batches (whole batches only) whose position
    — ``(chunk, batch within it)`` — is checkpointed, so a resumed run reads the same batches."""

    def __init__(self, cfg: PretrainConfig, corpus_cfg, tokenizer, position=(0, 0)):
        self._args = (cfg, corpus_cfg, tokenizer)
        self.chunk, self.offset = position
        self._batches = None

    @property
    def position(self) -> list[int]:
        return [self.chunk, self.offset]

    def next(self) -> sft.PackedRows:
        cfg = self._args[0]
        while True:
            if self._batches is None:
                rows = packed_chunk(*self._args, self.chunk)
                self._batches = list(sft.iterate_batches(rows, cfg.train.batch_size,
                                                         drop_remainder=True))
            if self.offset < len(self._batches):
                self.offset += 1
                return self._batches[self.offset - 1]
            self.chunk, self.offset, self._batches = self.chunk + 1, 0, None


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


RunConfig = PretrainConfig


def run(cfg: PretrainConfig, workdir: str) -> dict:
    """Pretrain (or resume pretraining) the base model described by ``cfg``."""
    output_dir = cfg.output_dir or os.path.join(workdir, "base")
    done = training_run.finished(workdir, cfg)
    if done is not None and os.path.isfile(os.path.join(output_dir, "SHA256SUMS")):
        return done
    if jax.process_count() > 1:
        raise ValueError("pretraining the tiny base runs in one process (its model is small and "
                         "unsharded); run it without --processes / JAX_NUM_PROCESSES")
    training_run.start(workdir, cfg)
    log_path = os.path.join(workdir, "pretrain_log.jsonl")
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
    checkpointer = training_run.open_checkpoints(workdir, train.max_to_keep)
    start, arrays, meta = training_run.resume(
        checkpointer, {"state": init_train_state(params, optimizer)})
    state = arrays["state"]
    stream = BatchStream(cfg, corpus_cfg, tokenizer, meta["stream"] if meta else (0, 0))
    tokens = meta["tokens"] if meta else 0
    if start == 0 and os.path.exists(log_path):
        os.remove(log_path)
    elif start:
        truncate_after(log_path, start)
    step_fn = sft.make_sft_step(sft.SFTConfig(optim=optim), model_cfg, optimizer, state)
    heldout = sft.SFTBatch.from_rows(next(sft.iterate_batches(
        packed_chunk(cfg, corpus_cfg, tokenizer, 0, stream="heldout"), train.batch_size)))
    _log(log_path, {"event": "start" if start == 0 else f"resume at step {start}",
                    "params": models.count_params(model_cfg), "vocab": tokenizer.vocab_size,
                    "setup_s": round(time.time() - t0, 1)})

    # ---------------------------------------------------------------- training
    t_train, losses, step = time.time(), [], start
    with training_run.Stopper() as stopper:
        for step in range(start + 1, train.steps + 1):
            rows = stream.next()
            state, metrics = step_fn(state, sft.SFTBatch.from_rows(rows))
            tokens += int((rows.segment_ids > 0).sum())
            losses.append(metrics["loss"])
            if step % train.log_every == 0 or step == train.steps:
                _log_step(log_path, cfg, state, metrics, losses, heldout, model_cfg, step=step,
                          tokens=tokens, elapsed=time.time() - t_train, start=start)
                losses = []
            if step % train.eval_every == 0 and step < train.steps and cfg.probe.periodic_problems:
                _log(log_path, {"step": step, **measure(cfg, state.params, model_cfg, tokenizer,
                                                        cfg.probe.periodic_problems, full=False)})
            stop = stopper.should_stop()
            if stop or training_run.checkpoint_due(step, train.steps, train.checkpoint_every):
                checkpointer.save(step, {"state": state},
                                  {"stream": stream.position, "tokens": tokens}, force=stop)
            if stop:
                break
    checkpointer.close()
    if stopper.preempted:
        return {"preempted_at": step}
    return _export_and_measure(cfg, workdir, output_dir, state.params, model_cfg, tokenizer,
                               tokens=tokens, train_s=time.time() - t_train, t0=t0,
                               log_path=log_path)


def _log_step(log_path, cfg, state, metrics, losses, heldout, model_cfg, *, step, tokens, elapsed,
              start):
    loss_sum, weight = sft.eval_loss(state.params, heldout, model_cfg=model_cfg)
    done = step - start
    _log(log_path, {"step": step, "loss": float(np.mean(jax.device_get(losses))),
                    "heldout_loss": float(loss_sum / weight),
                    "lr": float(metrics["learning_rate"]), "grad_norm": float(metrics["grad_norm"]),
                    "skipped": int(state.skipped_updates), "tokens": tokens,
                    "elapsed_s": round(elapsed), "eta_s": round(elapsed / done * (
                        cfg.train.steps - step))})


def _export_and_measure(cfg, workdir, output_dir, params, model_cfg, tokenizer, *, tokens,
                        train_s, t0, log_path) -> dict:
    hf.save_pretrained(output_dir, model_cfg, params)
    if jax.process_index() == 0:
        export_tokenizer(tokenizer.path, os.path.join(output_dir, "tokenizer.model"))
        with open(os.path.join(output_dir, "SHA256SUMS"), "w", encoding="utf-8") as f:
            f.write(sha256sums(output_dir))
    result = (measure(cfg, params, model_cfg, tokenizer, cfg.probe.num_problems, full=True)
              if cfg.probe.num_problems else {})
    summary = {"train_s": round(train_s), "total_s": round(time.time() - t0), "tokens": tokens,
               "params": models.count_params(model_cfg), "probe": result}
    _log(log_path, {"event": "done", "output_dir": output_dir,
                    **{k: v for k, v in result.items() if isinstance(v, float)},
                    "total_s": summary["total_s"]})
    return training_run.write_summary(workdir, cfg, summary)
