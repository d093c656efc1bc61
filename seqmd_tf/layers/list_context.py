"""List context: each item's features next to their difference from the list mean."""

import tensorflow as tf

from seqmd_tf.layers.shared_encoder import masked_list_mean


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class ListContext(tf.keras.layers.Layer):
  """Appends to every item how it differs from the rest of its list.

      out = concat(x, x - mean over the valid items of the list of x)

  This is the list context that `SharedEncoder(list_context=True)` computes in front of its
  MLP, as a layer of its own for models whose first block is not one MLP (the expert models).
  Padded items are left out of the mean, and a list whose items are all padding gets a mean
  of 0.

  Call arguments:
    x: float32 `[batch_size, list_size, D]`.
    mask: optional bool `[batch_size, list_size]`, True for valid items. None treats every
      item as valid.

  Returns:
    float32 `[batch_size, list_size, 2 * D]`.
  """

  def call(self, x, mask=None):
    return tf.concat([x, x - masked_list_mean(x, mask)], axis=-1)

  def compute_output_shape(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    width = None if input_shape[-1] is None else 2 * input_shape[-1]
    return input_shape[:-1].concatenate([width])

  def compute_mask(self, inputs, mask=None):
    # The item mask is an explicit argument, not a Keras mask to propagate.
    return None
