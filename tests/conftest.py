"""Test-wide setup: 8 fake CPU devices, set once before jax is imported anywhere."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TPU ahead-of-time tests load libtpu in this process and in launch/aot.py subprocesses; without
# this, the first to load it holds a machine-wide lock and the others fail.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import gc  # noqa: E402
import shutil  # noqa: E402

import jax  # noqa: E402  (must come after the environment is set)
import pytest  # noqa: E402

from r1jax import hf, models  # noqa: E402
from r1jax.data import R1_ZERO, SyntheticConfig, synthetic  # noqa: E402
from r1jax.tokenizer import train_sentencepiece  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop each module's compiled programs when it ends. An XLA:CPU executable holds several
    memory mappings for its code; a session that kept every module's programs passed the
    kernel's limit (vm.max_map_count, 65,530) about nine tenths of the way through the suite,
    and the next compile died in LLVM (SIGSEGV in CI, SIGABRT here)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A tiny Hugging Face-format policy: random weights and a sentencepiece tokenizer."""
    path = tmp_path_factory.mktemp("tiny_policy")
    questions = [p.question + " " + " , ".join(p.steps) for p in synthetic.generate(
        SyntheticConfig(task="arithmetic", difficulty=2, num_examples=300, seed=1))]
    corpus = questions + [R1_ZERO] * 5 + ["<think> </think> <answer> </answer>"] * 5
    tok = train_sentencepiece(corpus, str(path / "sp"), vocab_size=256,
                              user_defined_symbols=["<think>", "</think>", "<answer>", "</answer>"]
                              + [str(i) for i in range(100)])
    cfg = models.ModelConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                             qkv_bias=True, tie_embeddings=True, max_position_embeddings=256,
                             eos_token_id=tok.eos_id)
    hf.save_pretrained(str(path / "model"), cfg, models.init(cfg, jax.random.key(0)))
    shutil.copyfile(tok.path, path / "model" / "tokenizer.model")
    return str(path / "model")


