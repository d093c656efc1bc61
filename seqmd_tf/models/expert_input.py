"""The input of the expert models (MMoE, PLE, AdaTT), with the same list context as SEQ."""

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.list_context import ListContext


def expert_input(x: tf.Tensor, mask: tf.Tensor, config: ModelConfig) -> tf.Tensor:
  """Return the experts' and gates' input.

  Args:
    x: float32 `[batch_size, list_size, D]`, the item input.
    mask: bool `[batch_size, list_size]`, True for real items.
    config: `config.list_context` appends each item's difference from its list mean, as
      `SharedEncoder` does for the other models.

  Returns:
    float32 `[batch_size, list_size, 2 * D]` with the list context, else x itself.
  """
  if not config.list_context:
    return x
  return ListContext(name="list_context")(x, mask=mask)
