"""SFT, trace generation and multi-stage pipelines (DeepSeek-R1's stages) on the tiny policy."""
import json
import os

import ml_collections
import pytest

from r1jax import pipeline
from r1jax.data import DataError
from r1jax.metrics import read_jsonl
from r1jax.sft.data import load_examples, readable_cot
from r1jax.sft.rejection import FilterSettings, keep_reason


def sft_config(policy, **overrides):
    config = ml_collections.ConfigDict(dict(
        job="sft", name="sft", model=dict(checkpoint=policy),
        data=dict(train="synthetic-cot:arithmetic+synthetic-general", test="synthetic-cot:arithmetic",
                  synthetic_count=48, difficulty=1, seq_len=256),
        sft=dict(optim=dict(learning_rate=1e-3, warmup_steps=2)),
        epochs=2, batch_rows=8, eval_every=0, checkpoint_every=2, progress_bar=False,
        mesh=dict(data=-1, fsdp=1, tensor=1)))
    config.update_from_flattened_dict(overrides)
    return config


def traces_config(policy, out):
    return ml_collections.ConfigDict(dict(
        job="traces", model=dict(checkpoint=policy), output_dir=out,
        data=dict(train="synthetic:arithmetic+synthetic:general", difficulty=1, num_train=6),
        sampling=dict(num_samples=3, max_new_tokens=16, batch_prompts=6),
        filters=dict(require_correct=False, require_format=False, min_language=0.0),
        reward_workers=0, progress_bar=False, mesh=dict(data=-1, fsdp=1, tensor=1)))


def test_sft_learns_and_resumes_and_exports(tiny_policy_dir, tmp_path):
    summary = pipeline.run(sft_config(tiny_policy_dir), str(tmp_path / "sft"))
    assert summary["final"]["loss"] < summary["initial"]["loss"]
    assert os.path.isfile(os.path.join(summary["export"], "model.safetensors"))
    rows = read_jsonl(str(tmp_path / "sft" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(1, summary["steps"] + 1))
    assert pipeline.run(sft_config(tiny_policy_dir), str(tmp_path / "sft")) == \
        json.loads(open(tmp_path / "sft" / "summary.json").read())  # a finished run stands


def test_traces_filter_dedup_and_count(tiny_policy_dir, tmp_path):
    out = str(tmp_path / "traces")
    stats = pipeline.run(traces_config(tiny_policy_dir, out), str(tmp_path / "work"))
    assert stats["generated"] == 36 and 0 < stats["kept"] <= 36
    rows = read_jsonl(os.path.join(out, "data.jsonl"))
    assert len(rows) == stats["kept"]
    assert set(stats["tasks"]) == {"synthetic:arithmetic:d1:train", "synthetic:general:train"}
    per_prompt = {}
    for row in rows:
        per_prompt.setdefault(row["id"], []).append(row["response"])
    assert all(len(v) == len(set(v)) for v in per_prompt.values())  # deduplicated


def test_keep_reason_filters():
    f = FilterSettings()
    good = readable_cot(["3 + 4 = 7"], "7")
    assert keep_reason(good, 20, 1.0, False, "en", f) is None
    assert keep_reason(good, 20, 0.0, False, "en", f) == "incorrect"
    assert keep_reason(good, 20, None, True, "en", f) is None  # general prompts: no rule
    assert keep_reason("<answer> 7 </answer>", 5, 1.0, False, "en", f) == "format"
    mixed = "<think> First 3 + 4 = 7 然后 done </think> <answer> 7 </answer>"
    assert keep_reason(mixed, 20, 1.0, False, "en", f) == "mixed_scripts"
    assert keep_reason(good, 500, 1.0, False, "en", FilterSettings(max_tokens=100)) == "length"


def test_sft_jsonl_rows_are_checked(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "Q?", "response": "<answer> 1 </answer>"}\n{"prompt": "p"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2 field 'response'"):
        load_examples(str(path))
    path.write_text('{"prompt": "P: ", "response": "R"}\n')
    assert load_examples(str(path)) == [("P: ", "R")]


def test_stages_chain_outputs_and_skip_finished_ones(tiny_policy_dir, tmp_path):
    config = ml_collections.ConfigDict(dict(
        job="stages", order=("cold_start", "traces"),
        stages=dict(cold_start=sft_config(tiny_policy_dir, epochs=1),
                    traces=traces_config("{workdir}/cold_start/export", "{workdir}/traces/out"))))
    workdir = str(tmp_path / "pipe")
    summary = pipeline.run(config, workdir)
    assert set(summary["stages"]) == {"cold_start", "traces"}
    assert os.path.isfile(os.path.join(workdir, "traces", "out", "data.jsonl"))
    os.remove(os.path.join(workdir, "traces", "out", "data.jsonl"))
    again = pipeline.run(config, workdir)  # both stages are done: nothing runs again
    assert again == summary and not os.path.exists(os.path.join(workdir, "traces", "out",
                                                                "data.jsonl"))
    assert json.loads(open(os.path.join(workdir, "summary.json")).read()) == summary
    table = open(os.path.join(workdir, "summary.md")).read().splitlines()
    assert table[0].startswith("| stage | pass@1") and [r.split(" | ")[0] for r in table[2:]] == [
        "| cold_start", "| traces"]


def test_sft_refuses_a_seq_len_no_example_fits(tiny_policy_dir, tmp_path):
    with pytest.raises(ValueError, match=r"no example fits data.seq_len = 16 tokens"):
        pipeline.run(sft_config(tiny_policy_dir, **{"data.seq_len": 16}), str(tmp_path / "x"))
