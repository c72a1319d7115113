"""A tiny Hugging Face-format checkpoint (random weights + a sentencepiece tokenizer) for the
end-to-end tests, and 3-problem JSONL files in the GSM8K, MATH-500 and AIME field conventions."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import hf, models
from r1jax.data import R1_ZERO
from r1jax.tokenizer import train_sentencepiece

GSM8K = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 12 pens. How many pens are in 2 boxes?", "answer": "12 * 2 = 24\n#### 24"},
    {"question": "Sam had 1,000 stamps and gave away none. How many now?", "answer": "#### 1,000"},
]
MATH500 = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "solution": "...", "answer": "\\frac{3}{4}",
     "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
    {"problem": "Compute $3 \\cdot 5$.", "answer": "15", "unique_id": "test/prealgebra/2.json"},
    {"problem": "Solve $2x = 1$ for $x$.", "answer": "0.5", "unique_id": "test/algebra/3.json"},
]
AIME = [
    {"ID": "2024-I-1", "Problem": "Find the remainder when 2024 is divided by 1000.", "Answer": 24},
    {"ID": "2024-I-2", "Problem": "Find x if x + 1 = 34.", "Answer": "033"},
    {"ID": "2024-I-3", "Problem": "How many positive divisors does 12 have?", "Answer": 6},
]
FORMATS = {"gsm8k": GSM8K, "math500": MATH500, "aime": AIME}


def _corpus():
    lines = [R1_ZERO, "<think> 3 + 4 = 7 </think> <answer> 7 </answer>", "Using the numbers make"]
    for rows in FORMATS.values():
        lines += [json.dumps(r) for r in rows]
    lines += [" ".join(str(i) for i in range(j, j + 20)) for j in range(0, 200, 20)]
    return lines * 3


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A directory holding config.json, model.safetensors and tok.model (a 300-token vocabulary:
    every test prompt in the R1-Zero template falls in the 256-token bucket, so one program serves all)."""
    root = tmp_path_factory.mktemp("tiny_ckpt")
    tok = train_sentencepiece(_corpus(), str(root / "spm" / "tok"), vocab_size=300,
                              user_defined_symbols=["<think>", "</think>", "<answer>", "</answer>"])
    cfg = models.ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                             qkv_bias=True, tie_embeddings=True, max_position_embeddings=512,
                             bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    # Drawn here rather than by models.init, whose compile takes longer than the tests it serves.
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.asarray(np.ones(s.shape) if path[-1].key == "scale"
                                    else rng.normal(0.0, 0.3, s.shape), s.dtype),
        models.param_shapes(cfg))
    ckpt = root / "export"
    hf.save_pretrained(str(ckpt), cfg, params)
    shutil.copy(root / "spm" / "tok.model", ckpt / "tok.model")
    return ckpt


@pytest.fixture(scope="session")
def jsonl_files(tmp_path_factory):
    """``{format: path}`` of the three 3-problem JSONL files."""
    root = tmp_path_factory.mktemp("benchmarks")
    paths = {}
    for name, rows in FORMATS.items():
        paths[name] = root / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
