"""Shared encoder: a per-item MLP over the last axis, with optional list context."""

import numbers
from collections.abc import Sequence

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class SharedEncoder(tf.keras.layers.Layer):
  """Encodes every item of every list with one Dense stack shared by all tasks.

      z = MLP(x)                                   [batch_size, list_size, H]

  With `list_context=True` the MLP also receives each item's difference from its list
  mean, because re-rankers gain from seeing the rest of the list. The MLP input becomes

      concat(x, x - mean over the valid items of the list of x)    [batch_size, list_size, 2 * D]

  Padded items are excluded from the list mean. A list whose items are all padding gets
  a mean of 0, never NaN.

  Call arguments:
    x: float32 `[batch_size, list_size, D]`, the (masked) input features of each item.
    mask: optional bool `[batch_size, list_size]`, True for valid items. None treats
      every item as valid. Only the list mean reads it, so padded items still get an
      output, which the losses ignore.
    training: whether dropout is active.

  Returns:
    float32 `[batch_size, list_size, hidden_units[-1]]`.
  """

  def __init__(
    self,
    hidden_units: Sequence[int] = (128, 64),
    dropout: float = 0.0,
    activation: str = "relu",
    list_context: bool = False,
    **kwargs,
  ):
    """Create the layer.

    Args:
      hidden_units: widths of the Dense layers, at least one. The last width is H.
      dropout: dropout rate in [0, 1) applied after every Dense layer during training.
      activation: Keras activation name of every Dense layer, including the last.
      list_context: whether to append each item's difference from its list mean.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      TypeError: if `hidden_units` is a single number instead of a list.
      ValueError: if `hidden_units` is empty or has a width <= 0, or if `dropout` is
        outside [0, 1).
    """
    super().__init__(**kwargs)
    if isinstance(hidden_units, (numbers.Number, str)):
      raise TypeError(
        f"SharedEncoder: hidden_units must be a list of ints, received {hidden_units!r}. "
        f"Write [{hidden_units!r}] for a single layer."
      )
    if not hidden_units:
      raise ValueError(
        "SharedEncoder: hidden_units must be a non-empty list of ints > 0, "
        f"received {hidden_units!r}."
      )
    for units in hidden_units:
      if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
        raise ValueError(
          "SharedEncoder: every entry of hidden_units must be an int > 0, "
          f"received {hidden_units!r}."
        )
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"SharedEncoder: dropout must be in [0, 1), received {dropout!r}.")

    self.hidden_units = tuple(int(units) for units in hidden_units)
    self.dropout = float(dropout)
    self.activation = activation
    self.list_context = bool(list_context)

    self._dense_layers = [
      tf.keras.layers.Dense(units, activation=activation, name=f"dense_{i}")
      for i, units in enumerate(self.hidden_units)
    ]
    self._dropout_layers = [
      tf.keras.layers.Dropout(self.dropout, name=f"dropout_{i}")
      for i in range(len(self.hidden_units))
    ]

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3 or input_shape[-1] is None:
      raise ValueError(
        "SharedEncoder: x must have shape [batch_size, list_size, D] with a known D, "
        f"received shape {input_shape}."
      )

    width = input_shape[-1] * (2 if self.list_context else 1)
    for layer in self._dense_layers:
      layer.build(tf.TensorShape([None, None, width]))
      width = layer.units
    super().build(input_shape)

  def call(self, x, mask=None, training=None):
    if self.list_context:
      x = tf.concat([x, x - masked_list_mean(x, mask)], axis=-1)

    for dense, dropout in zip(self._dense_layers, self._dropout_layers):
      x = dense(x)
      if self.dropout > 0.0:
        x = dropout(x, training=training)
    return x

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1].concatenate([self.hidden_units[-1]])

  def get_config(self):
    config = super().get_config()
    config.update(
      {
        "hidden_units": list(self.hidden_units),
        "dropout": self.dropout,
        "activation": self.activation,
        "list_context": self.list_context,
      }
    )
    return config


def masked_list_mean(x: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
  """Average `x` over the valid items of each list.

  Args:
    x: float32 `[batch_size, list_size, D]`.
    mask: bool `[batch_size, list_size]`, True for valid items, or None for all valid.

  Returns:
    float32 `[batch_size, 1, D]`. A list with no valid item gets 0.
  """
  if mask is None:
    return tf.reduce_mean(x, axis=1, keepdims=True)

  valid = tf.cast(mask, tf.bool)[:, :, tf.newaxis]
  # tf.where rather than a product, so a non-finite value in a padded item cannot leak
  # into the mean.
  total = tf.reduce_sum(tf.where(valid, x, tf.zeros_like(x)), axis=1, keepdims=True)
  count = tf.reduce_sum(tf.cast(valid, x.dtype), axis=1, keepdims=True)
  # divide_no_nan returns 0 for an all-padding list (count 0) instead of NaN.
  return tf.math.divide_no_nan(total, count)
