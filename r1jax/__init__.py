"""r1jax: DeepSeek-R1 (GRPO, R1-Zero, R1, distillation) in JAX for TPU, GPU and CPU.

Shape legend — every array name in r1jax ends with the letters of its shape (``logits_BxLxV``):

    B  rows of a batch (sequences; in a rollout ``P·G``, row ``p·G + g`` is sample g of prompt p)
    P  prompts                      G  samples per prompt (the GRPO group)
    L  tokens fed at once (a training row is ``Lp + T``: left-padded prompt, then completion)
    Lp prompt tokens                T  completion (new) tokens, or decode steps
    S  KV-cache slots               N  flattened tokens (``B·L``), or ``H·E`` in an output kernel
    D  model width                  F  MLP width
    H  query heads                  K  KV heads        Q  query heads per KV head (``H / K``)
    E  head dim                     V  vocabulary
    Y  layers                       C  fused q/k/v columns (``(H + 2K)·E``)
    M  stop-sequence window         Eh half a head dim (rotary frequencies)
    X  routed experts               A  experts chosen per token (top-k)
    R  token-expert assignments (``N·A``, sorted by expert in the grouped matmuls)
"""
