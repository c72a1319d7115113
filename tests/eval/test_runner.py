"""End to end: a tiny Hugging Face-format checkpoint evaluated on a synthetic task and on 3-problem
JSONL files in the GSM8K, MATH-500 and AIME formats; the files written; resume after a kill; the
errors for wrong checkpoints and configs.

Every run here uses k = 2, 3 prompts per batch and 8 new tokens, so all share one compiled program.
"""
import json
import os
import shutil

import pytest

from r1jax.configdict import from_config
from r1jax.eval import ConfigError, EvalSettings, RunConfig, read_records, summarize
from r1jax.eval import runner
from r1jax.eval.report import json_safe

FORMATS = ("aime", "gsm8k", "math500")  # the 3-problem files of conftest.jsonl_files

TINY = dict(num_samples=2, max_new_tokens=8, batch_size=3, reward_workers=0, progress=False)


def run(block, workdir):
    """The ``eval`` job on ``block`` (the config's ``eval`` settings), as ``launch/run.py`` runs it."""
    return runner.run(_config(block), workdir)


def _config(block):
    return from_config(RunConfig, {"job": "eval", "eval": block})


def _files(out):
    samples = [json.loads(line) for line in open(os.path.join(out, "samples.jsonl"))]
    summary = json.load(open(os.path.join(out, "summary.json")))
    return samples, summary, open(os.path.join(out, "results.md")).read()


def _check_outputs(out, result, ids):
    samples, summary, table = _files(out)
    assert [s["id"] for s in samples] == list(ids) == [r.id for r in result.records]
    for line in samples:
        assert len(line["samples"]) == 2 and set(line["pass_at_k"]) == {"1", "2"}
        for sample in line["samples"]:
            assert set(sample) == {"text", "answer", "correct", "format_ok", "length", "truncated"}
            assert isinstance(sample["text"], str) and 1 <= sample["length"] <= 8
            assert sample["truncated"] or sample["length"] < 8 or sample["correct"] is not None
            assert sample["correct"] in (True, False) and sample["format_ok"] in (True, False)
    # The summary is what the whole file gives.
    recomputed = summarize(read_records(os.path.join(out, "samples.jsonl")), result.settings)
    assert summary["metrics"] == pytest.approx(json_safe(recomputed))
    assert dict(result.metrics) == pytest.approx(recomputed, nan_ok=True)
    assert summary["metrics"]["num_problems"] == len(ids) and summary["settings"]["num_samples"] == 2
    assert json.load(open(os.path.join(out, "run.json")))["settings"]["max_new_tokens"] == 8
    header = "| benchmark | problems | k | pass@1 | pass@2 | cons@2 | format |"
    assert header in table
    return samples, summary, table


def test_synthetic_benchmark(tiny_checkpoint, tmp_path):
    result = run(dict(ckpt=str(tiny_checkpoint), bench="countdown", num_problems=3, **TINY), str(tmp_path))
    out = tmp_path / "eval" / "countdown-d2"
    ids = [f"synthetic:countdown:d2:test:seed0:{i}" for i in range(3)]
    _, _, table = _check_outputs(out, result, ids)
    assert "| countdown-d2 | 3 | 2 |" in table
    assert all(r.kind == "verifier" and r.vote_answer is not None for r in result.records)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_jsonl_formats(tiny_checkpoint, jsonl_files, tmp_path, fmt):
    config = dict(ckpt=str(tiny_checkpoint), bench=str(jsonl_files[fmt]), format=fmt, **TINY)
    if fmt == "aime":  # also judge and vote in worker processes
        config["reward_workers"] = 1
    result = run(config, str(tmp_path))
    out = tmp_path / "eval" / f"{fmt}-{fmt}"
    expected = {"gsm8k": ["gsm8k.jsonl:1", "gsm8k.jsonl:2", "gsm8k.jsonl:3"],
                "math500": ["test/algebra/1.json", "test/prealgebra/2.json", "test/algebra/3.json"],
                "aime": ["2024-I-1", "2024-I-2", "2024-I-3"]}[fmt]
    samples, summary, _ = _check_outputs(out, result, expected)
    golds = {"gsm8k": ["7", "24", "1,000"], "math500": ["\\frac{3}{4}", "15", "0.5"],
             "aime": ["24", "033", "6"]}[fmt]
    assert [s["gold"] for s in samples] == golds and summary["metrics"]["unjudged_samples"] == 0
    assert result.settings.pass_k == (1, 2) and result.settings.temperature == 0.6


def test_named_benchmark_with_data_file(tiny_checkpoint, jsonl_files, tmp_path):
    result = run(dict(ckpt=str(tiny_checkpoint), bench="aime", data=str(jsonl_files["aime"]), **TINY),
                 str(tmp_path))
    assert os.path.isfile(tmp_path / "eval" / "aime" / "summary.json") and len(result.records) == 3


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_checkpoint, tmp_path, monkeypatch):
    config = dict(ckpt=str(tiny_checkpoint), bench="arithmetic", num_problems=6, **TINY)
    whole = run({**config, "output_dir": str(tmp_path / "whole")}, str(tmp_path))

    # Kill after the first batch is written; then the write of the next one is torn mid-line.
    real = runner.iter_evaluate

    def killed_after_one_batch(*args, **kwargs):
        batches = real(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "iter_evaluate", killed_after_one_batch)
    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run({**config, "output_dir": str(resumed_dir)}, str(tmp_path))
    monkeypatch.undo()
    samples_path = resumed_dir / "samples.jsonl"
    assert len(samples_path.read_text().splitlines()) == 3 and not (resumed_dir / "summary.json").exists()
    whole_lines = (tmp_path / "whole" / "samples.jsonl").read_text().splitlines()
    with open(samples_path, "a") as f:
        f.write(whole_lines[3][:50])

    resumed = run({**config, "output_dir": str(resumed_dir)}, str(tmp_path))
    assert samples_path.read_text().splitlines() == whole_lines  # no duplicates, same samples
    assert resumed.records == whole.records
    assert dict(resumed.metrics) == pytest.approx(dict(whole.metrics), nan_ok=True)
    assert _files(resumed_dir)[1]["metrics"] == _files(tmp_path / "whole")[1]["metrics"]

    # A finished run starts nothing again: no model is loaded.
    monkeypatch.setattr(runner, "load_model", lambda rc: pytest.fail("regenerated a finished run"))
    again = run({**config, "output_dir": str(resumed_dir)}, str(tmp_path))
    assert again.records == whole.records

    with pytest.raises(ConfigError, match=r"settings\.num_samples: 2 then, 3 now"):
        run({**config, "num_samples": 3, "output_dir": str(resumed_dir)}, str(tmp_path))


def test_checkpoint_errors(tiny_checkpoint, tmp_path):
    base = dict(bench="countdown", num_problems=3, **TINY)
    with pytest.raises(FileNotFoundError, match="eval.ckpt: checkpoint directory"):
        run(dict(ckpt=str(tmp_path / "missing"), **base), str(tmp_path))
    orbax = tmp_path / "orbax"
    (orbax / "100").mkdir(parents=True)
    (orbax / "100" / "_CHECKPOINT_METADATA").write_text("{}")
    with pytest.raises(ConfigError, match="looks like an orbax training checkpoint"):
        run(dict(ckpt=str(orbax), **base), str(tmp_path))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", no_weights)
    with pytest.raises(ConfigError, match=r"no \*.safetensors weights"):
        run(dict(ckpt=str(no_weights), **base), str(tmp_path))
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_checkpoint, no_tokenizer)
    os.remove(no_tokenizer / "tok.model")
    with pytest.raises(ConfigError, match="eval.tokenizer"):
        run(dict(ckpt=str(no_tokenizer), **base), str(tmp_path))


@pytest.mark.parametrize("change, message", [
    (dict(ckpt=""), "eval.ckpt is required"),
    (dict(bench="aime24"), "eval.bench 'aime24' is neither a benchmark"),
    (dict(format="aime"), "eval.format='aime' applies to a .jsonl path"),
    (dict(num_samples="8"), "eval.num_samples: expected an integer, got '8'"),
    (dict(pass_k=(1, 64)), r"eval.pass_k \[64\] must lie in \[1, num_samples=2\]"),
    (dict(dtype="int8"), "eval.dtype 'int8'"),
    (dict(mesh={"model": 2}), "eval.mesh names axes"),
    (dict(temperture=0.6), "eval.temperture: unknown setting"),
])
def test_config_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        _config({"ckpt": "/x", "bench": "countdown", **TINY, **change})


def test_run_config_resolves_paths_and_defaults(jsonl_files):
    rc = _config({"ckpt": "/x", "bench": str(jsonl_files["math500"]), "format": "math500"}).eval
    assert (rc.benchmark, rc.label) == ("math500", "math500-math500")
    assert rc.data_path == str(jsonl_files["math500"])
    assert rc.settings == EvalSettings.for_benchmark("math500", reward_config=rc.settings.reward_config)
    generic = _config({"ckpt": "/x", "bench": str(jsonl_files["gsm8k"])}).eval
    assert (generic.benchmark, generic.label) == ("jsonl", "gsm8k")
