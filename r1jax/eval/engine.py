"""In-memory evaluation: k samples per problem from the rollout engine, judged by the rewards package.

Problems go to ``r1jax.completions.complete`` ``settings.batch_size`` at a time with ``group_size = k``
(rows prompt-major, ``p * k + g``). Batch ``b`` always holds problems ``[b·B, (b+1)·B)`` and samples
with the key ``fold_in(rng, b)``, so a batch's samples do not depend on which other batches ran:
a resumed run regenerates exactly the samples an uninterrupted run would have drawn.
Completions are judged in the reward pool (code in the sandbox), and the majority vote of each
problem's answers runs there too.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax

from r1jax import completions
from r1jax.data import Problem, get_template
from r1jax.eval.estimators import vote
from r1jax.eval.records import EvalResult, ProblemRecord, SampleRecord, running_accuracy, summarize
from r1jax.eval.settings import EvalSettings
from r1jax.rewards import BatchScores, RewardInput, RewardPool, extract_answer, extract_code, score_batch


def evaluate(params: Any, model_config, tokenizer, problems: Sequence[Problem], *,
             settings: EvalSettings, rng: jax.Array, sharding=None, pool: RewardPool | None = None,
             progress: bool = False) -> EvalResult:
    """Samples ``settings.num_samples`` completions for every problem, judges them, and summarizes.

    ``pool`` (an ``r1jax.rewards.RewardPool``) judges in worker processes with a per-item timeout;
    without one, judging runs here. ``progress`` shows a tqdm bar with the running pass@1.
    """
    problems = list(problems)
    records: list[ProblemRecord] = []
    bar = progress_bar(len(problems), 0, progress, "eval")
    try:
        for batch in iter_evaluate(params, model_config, tokenizer, problems, settings=settings,
                                   rng=rng, sharding=sharding, pool=pool):
            records.extend(batch)
            bar.update(len(batch))
            bar.set_postfix(pass1=f"{running_accuracy(records):.3f}")
    finally:
        bar.close()
    return EvalResult(tuple(records), summarize(records, settings), settings)


def iter_evaluate(params: Any, model_config, tokenizer, problems: Sequence[Problem], *,
                  settings: EvalSettings, rng: jax.Array, sharding=None,
                  pool: RewardPool | None = None, skip_ids: frozenset[str] = frozenset()
                  ) -> Iterator[list[ProblemRecord]]:
    """The records of each batch, in problem order, leaving out problems whose id is in ``skip_ids``
    (a batch whose problems are all skipped is not generated)."""
    problems = list(problems)
    _check_unique_ids(problems)
    prompts = completions.encode_prompts(tokenizer, get_template(settings.template), problems,
                                         add_bos=settings.add_bos)
    _check_budget(prompts, settings, model_config)
    size = settings.batch_size
    for b, start in enumerate(range(0, len(problems), size)):
        batch = problems[start:start + size]
        if all(p.id in skip_ids for p in batch):
            continue
        done = completions.complete(
            params, model_config, tokenizer, prompts[start:start + size], settings.request,
            group_size=settings.num_samples, rng=jax.random.fold_in(rng, b), problems=batch,
            reward_config=settings.judge_config, pool=pool, sharding=sharding)
        records = judge(batch, done.texts, done.lengths_B.tolist(), done.truncated_B.tolist(),
                        settings=settings, pool=pool, first_index=start, scores=done.scores)
        yield [r for r in records if r.id not in skip_ids]


def judge(problems: Sequence[Problem], texts: Sequence[str], lengths: Sequence[int],
          truncated: Sequence[bool], *, settings: EvalSettings, pool: RewardPool | None = None,
          first_index: int = 0, scores: BatchScores | None = None) -> list[ProblemRecord]:
    """Records for ``problems`` from their completions, ``settings.num_samples`` per problem in
    prompt-major order (row ``p * k + g``): correctness and format by the rewards package (or
    ``scores``, already judged with ``settings.judge_config``), the extracted answers, and
    (``settings.cons``, non-code problems) the majority vote."""
    k = settings.num_samples
    if not len(texts) == len(lengths) == len(truncated) == k * len(problems):
        raise ValueError(f"{len(problems)} problems × {k} samples need {k * len(problems)} completions, "
                         f"got {len(texts)} texts, {len(lengths)} lengths, {len(truncated)} flags")
    if scores is None:
        inputs = [RewardInput.from_problem(problems[row // k], text, int(n))
                  for row, (text, n) in enumerate(zip(texts, lengths))]
        scores = score_batch(inputs, settings.judge_config, pool)
    runner = pool if pool is not None else RewardPool(0)
    answers = [extract_code(t) if problems[row // k].kind == "code" else extract_answer(t)
               for row, t in enumerate(texts)]
    voted = [i for i, p in enumerate(problems) if settings.cons and p.kind != "code"]
    votes = dict(zip(voted, runner.map(vote, [(answers[i * k:(i + 1) * k],) for i in voted]).values))
    records = []
    for i, problem in enumerate(problems):
        samples = []
        for row in range(i * k, (i + 1) * k):
            breakdown = scores.breakdowns[row]
            components = breakdown.components if breakdown is not None else {}
            samples.append(SampleRecord(
                text=texts[row], answer=answers[row],
                correct=_as_bool(components.get("accuracy"), exact=True),
                format_ok=_as_bool(components.get("format")), length=int(lengths[row]),
                truncated=bool(truncated[row])))
        result = votes.get(i)
        vote_fields = {}
        if result is not None:  # None also when the vote itself failed in the pool: not voted
            if result.index is not None:
                correct = samples[result.index].correct
            else:  # no sample committed to an answer: the vote is wrong (if judging was possible)
                correct = False if any(s.correct is not None for s in samples) else None
            vote_fields = dict(vote_answer=result.answer, vote_count=result.count, vote_correct=correct)
        records.append(ProblemRecord(id=problem.id, index=first_index + i, kind=problem.kind,
                                     question=problem.question, gold=problem.answer,
                                     samples=tuple(samples), **vote_fields))
    return records


def _as_bool(value: float | None, exact: bool = False) -> bool | None:
    """A judged component as a verdict: full marks only (``exact``), or any positive value."""
    if value is None:
        return None
    return value >= 1.0 if exact else value > 0.0


def _check_unique_ids(problems: Sequence[Problem]) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ValueError(f"problem id {p.id!r} occurs twice ({p.source}); evaluation records are "
                             "keyed by id, so ids must be unique")
        seen.add(p.id)


def _check_budget(prompts: Sequence[Sequence[int]], settings: EvalSettings, model_config) -> None:
    if not prompts:
        return
    longest = max(len(p) for p in prompts)
    limit = model_config.max_position_embeddings
    if longest + settings.max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt ({longest} tokens) plus max_new_tokens={settings.max_new_tokens} exceeds "
            f"the model's {limit} positions; lower EvalSettings.max_new_tokens to at most "
            f"{max(limit - longest, 0)}")


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """A tqdm bar counting problems (disabled unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="problem",
                dynamic_ncols=True)
