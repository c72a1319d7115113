"""Tile sizes for the kernels, one frozen dataclass per kernel, validated per backend.

Each backend constrains tiles differently:
  * ``pallas_tpu`` (Mosaic): the last two dims of every block must be multiples of (8, 128) or
    equal the full array dim; the whole working set of one grid step must fit the scoped VMEM.
  * ``pallas_gpu`` (Triton): every tile that is loaded or stored must have a power-of-two size,
    and ``tl.dot`` wants each matmul dim >= 16.
  * ``xla_chunked``: any positive size; it only bounds the ``block_n x block_v`` logits tile.

A violated constraint raises ``ValueError`` naming the field and the fix, at call time (before
any tracing of the kernel), so a bad config fails at start-up rather than deep inside Mosaic or
Triton.
"""
from __future__ import annotations

import dataclasses

LOGPROB_IMPLS = ("auto", "pallas_tpu", "xla_chunked", "pallas_gpu", "reference")
ADVANTAGE_IMPLS = ("auto", "pallas_tpu", "pallas_gpu", "reference")

# Mosaic's native f32 tile is (8 sublanes, 128 lanes).
TPU_SUBLANES, TPU_LANES = 8, 128
# VMEM per TensorCore is 16 MiB (v2-v4), 64 MiB (v5p, v7x) or 128 MiB (v5e, v6e).  When the chip
# is unknown at trace time (interpret mode, or ahead-of-time compilation without a TPU abstract
# mesh), plan for 64 MiB.  A grid step may use at most 3/4 of it: Mosaic needs the rest.
TPU_DEFAULT_VMEM_BYTES = 64 * 2**20
TPU_VMEM_BUDGET_FRACTION = 0.75


def _is_power_of_two(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


def _check_positive(owner: str, **fields: int | None) -> None:
    for name, value in fields.items():
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class LogprobBlockSizes:
    """Tiles of ``token_logprobs``: ``block_n`` token rows x ``block_v`` vocab columns per step.

    Attributes:
      block_n: token rows per tile.  On TPU this sets the arithmetic intensity of the forward and
        dh kernels (``W`` is streamed once per row block: ~``block_n`` FLOP per byte), so keep it
        >= 256 on v5e (197 TFLOP/s over 819 GB/s ~= 240).
      block_v: vocab columns per tile (the online log-sum-exp step).  On TPU it sets the intensity
        of the dW kernel (``hidden`` is streamed once per vocab block).
      block_d: ``pallas_gpu`` only: the model-width chunk of the in-kernel matmul loop (Triton
        tiles must be powers of two and D = 1536 or 3584 is not).  Ignored elsewhere.
    """

    block_n: int = 512
    block_v: int = 512
    block_d: int | None = None

    def __post_init__(self):
        _check_positive("LogprobBlockSizes", block_n=self.block_n, block_v=self.block_v,
                        block_d=self.block_d)

    @classmethod
    def default(cls, impl: str, *, model_dim: int = 1024, itemsize: int = 2,
                vmem_bytes: int = TPU_DEFAULT_VMEM_BYTES) -> "LogprobBlockSizes":
        """Tiles that compile and run well for ``impl``.

        On TPU: the largest of a few candidate tiles, preferring tall row blocks (they set the
        arithmetic intensity of the forward and dh kernels), whose VMEM estimate fits the budget.
        """
        if impl == "pallas_tpu":
            budget = int(vmem_bytes * TPU_VMEM_BUDGET_FRACTION)
            candidates = ((512, 512), (512, 256), (256, 256), (256, 128), (128, 128), (64, 128),
                          (32, 128), (8, 128))
            if itemsize >= 4:
                # HIGHEST-precision f32 matmuls take ~6 MXU passes, so 256-row tiles already
                # keep the MXU busy (~bn/2 FLOP per byte vs ~40 needed on v5e), and Mosaic
                # compiles them ~4x faster than 512-row ones.
                candidates = candidates[2:]
            for block_n, block_v in candidates:
                if tpu_logprob_vmem_bytes(block_n, block_v, model_dim, itemsize) <= budget:
                    return cls(block_n=block_n, block_v=block_v)
            raise ValueError(f"no pallas_tpu tile fits {vmem_bytes / 2**20:.0f} MiB of VMEM at "
                             f"D={model_dim}; use impl='xla_chunked'.")
        if impl == "pallas_gpu":
            # A (64, 128) f32 logits tile is 64 registers per thread at 4 warps; W is streamed
            # once per 64-row program.  Untuned: chosen without a GPU at hand.
            return cls(block_n=64, block_v=128, block_d=64)
        if impl == "xla_chunked":
            # 4096 x 1024 f32 = 16 MiB per logits-sized temporary; a handful live at once.
            return cls(block_n=4096, block_v=1024)
        raise ValueError(f"no default block sizes for impl={impl!r}.")

    def validate(self, impl: str, *, model_dim: int, itemsize: int,
                 vmem_bytes: int = TPU_DEFAULT_VMEM_BYTES) -> None:
        """Raises ``ValueError`` if these tiles cannot be used by ``impl``."""
        if impl == "pallas_tpu":
            if self.block_n % TPU_SUBLANES:
                raise ValueError(
                    f"LogprobBlockSizes.block_n={self.block_n} must be a multiple of "
                    f"{TPU_SUBLANES} for pallas_tpu (Mosaic tiles are ({TPU_SUBLANES}, "
                    f"{TPU_LANES})); try "
                    f"{max(TPU_SUBLANES, self.block_n // TPU_SUBLANES * TPU_SUBLANES)}.")
            if self.block_v % TPU_LANES:
                raise ValueError(
                    f"LogprobBlockSizes.block_v={self.block_v} must be a multiple of {TPU_LANES} "
                    f"for pallas_tpu (the vocab axis is the lane axis); try "
                    f"{max(TPU_LANES, self.block_v // TPU_LANES * TPU_LANES)}.")
            need = tpu_logprob_vmem_bytes(self.block_n, self.block_v, model_dim, itemsize)
            budget = int(vmem_bytes * TPU_VMEM_BUDGET_FRACTION)
            if need > budget:
                raise ValueError(
                    f"LogprobBlockSizes(block_n={self.block_n}, block_v={self.block_v}) needs "
                    f"about {need / 2**20:.0f} MiB of VMEM per grid step at D={model_dim} and "
                    f"{itemsize}-byte inputs, over the {budget / 2**20:.0f} MiB budget; lower "
                    f"block_v (or block_n), or leave block_sizes=None for a tile that fits.")
        elif impl == "pallas_gpu":
            for name in ("block_n", "block_v", "block_d"):
                value = getattr(self, name)
                if value is None:
                    raise ValueError(
                        f"LogprobBlockSizes.{name} must be set for pallas_gpu (e.g. 64).")
                if not _is_power_of_two(value) or value < 16:
                    raise ValueError(
                        f"LogprobBlockSizes.{name}={value} must be a power of two >= 16 for "
                        f"pallas_gpu (Triton tiles and tl.dot); try "
                        f"{max(16, 1 << (value.bit_length() - 1))}.")
        elif impl != "xla_chunked":
            raise ValueError(f"block sizes do not apply to impl={impl!r}.")


def tpu_logprob_vmem_bytes(block_n: int, block_v: int, model_dim: int, itemsize: int) -> int:
    """Estimated VMEM of one grid step of the hungriest TPU log-prob kernel (dh or dW).

    Double-buffered ``(block_n, D)`` hidden and ``(D, block_v)`` weight tiles; the double-buffered
    output tile of dh ``(block_n, D)`` or dW ``(D, block_v)`` and its f32 accumulator; eight live
    ``(block_n, block_v)`` f32 temporaries; ten double-buffered ``(block_n, 1)`` row vectors, which
    Mosaic pads to 128 lanes.  f32 inputs cost ~1.6x more: HIGHEST-precision matmuls keep bf16
    hi/lo splits of both operands.  Rough (Mosaic's own accounting differs), but the defaults it
    picks compile for v5e at D up to 8192 (see tests/kernels/test_kernels_tpu_aot.py).
    """
    inputs = 2 * (block_n + block_v) * model_dim * itemsize
    widest = max(block_n, block_v)
    output = 2 * widest * model_dim * itemsize + widest * model_dim * 4
    temporaries = 8 * block_n * block_v * 4 + 10 * block_n * TPU_LANES * 4
    total = inputs + output + temporaries
    return int(total * 1.6) if itemsize >= 4 else total


@dataclasses.dataclass(frozen=True)
class AdvantageBlockSizes:
    """Tiles of ``grouped_advantages``: ``block_p`` groups (prompts) per grid step, all G samples.

    A group's statistics need all of its G samples, so a tile always spans the full group axis;
    only the prompt axis is tiled.  Rewards are tiny (P x G floats), so the default is large.
    """

    block_p: int = 256

    def __post_init__(self):
        _check_positive("AdvantageBlockSizes", block_p=self.block_p)

    def validate(self, impl: str) -> None:
        if impl == "pallas_tpu" and self.block_p % TPU_SUBLANES:
            raise ValueError(
                f"AdvantageBlockSizes.block_p={self.block_p} must be a multiple of "
                f"{TPU_SUBLANES} for pallas_tpu; try "
                f"{max(TPU_SUBLANES, self.block_p // TPU_SUBLANES * TPU_SUBLANES)}.")
        if impl == "pallas_gpu" and not _is_power_of_two(self.block_p):
            raise ValueError(
                f"AdvantageBlockSizes.block_p={self.block_p} must be a power of two for "
                f"pallas_gpu; try {1 << (self.block_p.bit_length() - 1)}.")


# ----------------------------------------------------------- ragged paged attention (TPU)
# Tokens per kernel block when pages_per_block is not given: a lane-dense (Q, T) score tile and
# ~1 MiB of DMA per block at K=8, E=128, bf16, which amortizes the per-block issue/wait overhead.
PAGED_TARGET_BLOCK_TOKENS = 512
# VMEM for the four K/V page buffers (2 pools x 2 slots); well under every chip's scoped default.
PAGED_KV_BUFFER_BUDGET = 8 * 2**20


def default_pages_per_block(page_size, max_pages, kv_heads, head_dim, itemsize, pools=2):
    """About ``PAGED_TARGET_BLOCK_TOKENS`` tokens per block, within the K/V buffer budget and M
    (``pools``: 1 when the keys are the values)."""
    per_page = pools * 2 * kv_heads * page_size * head_dim * itemsize  # pools x 2 slots
    pages = max(1, PAGED_TARGET_BLOCK_TOKENS // page_size)
    pages = min(pages, max(1, PAGED_KV_BUFFER_BUDGET // per_page))
    return max(1, min(pages, max_pages))


def paged_attention_vmem_bytes(kv_heads, num_queries, head_dim, page_size, pages_per_block,
                               itemsize, pools=2):
    """Rough VMEM of one grid step: K/V buffers (one pool's when the keys are the values), q/out
    blocks, f32 state and block temporaries."""
    block_len = page_size * pages_per_block
    kv_buffers = pools * 2 * kv_heads * block_len * head_dim * itemsize
    q_out = 2 * 2 * kv_heads * max(num_queries, 8) * head_dim * itemsize
    state = kv_heads * max(num_queries, 8) * (head_dim + 2 * TPU_LANES) * 4
    temporaries = kv_heads * (4 * max(num_queries, 8) * block_len + 2 * block_len * head_dim) * 4
    return kv_buffers + q_out + state + temporaries


def check_paged_tpu(page_size, num_seqs, max_pages, pages_per_block, smem_bytes):
    """``ragged_paged_attention``'s TPU constraints: whole-tile pages, blocks within the table,
    the scalar-prefetched table and lengths within ``smem_bytes`` of SMEM."""
    name = "ragged_paged_attention(impl='pallas_tpu')"
    if page_size % TPU_SUBLANES:
        raise ValueError(f"{name}: page size P={page_size} must be a multiple of "
                         f"{TPU_SUBLANES}: each page is DMAed to a row offset of a VMEM "
                         "buffer, which must fall on a whole (8, 128) tile.")
    if pages_per_block > max_pages:
        raise ValueError(f"{name}: pages_per_block={pages_per_block} exceeds the table's "
                         f"M={max_pages} pages per sequence.")
    # Four 1-D int32 arrays are prefetched into SMEM, each padded to 1024-word tiles; leave
    # Mosaic a little for its own scalars.
    words = lambda n: -(-n // 1024) * 1024  # noqa: E731
    smem = 4 * (words(num_seqs * max_pages) + 3 * words(num_seqs))
    if smem > smem_bytes - 16 * 2**10:
        raise ValueError(f"{name}: the page table (S={num_seqs} x M={max_pages} int32, "
                         f"{smem / 2**10:.0f} KiB with the lengths) does not fit in SMEM "
                         f"({smem_bytes / 2**10:.0f} KiB); call it on fewer "
                         "sequences at a time or use larger pages.")
