"""Task tower: the small per-task MLP that turns an item representation into a logit."""

from collections.abc import Sequence

import tensorflow as tf

from seqmd_tf.layers.validation import check_units


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class TaskTower(tf.keras.layers.Layer):
  """Scores every item for one task.

      logits = Dense(1)(ReLU MLP with widths hidden_units (h))

  Call arguments:
    h: float32 `[batch_size, list_size, H]`, the task's representation of every item.

  Returns:
    float32 logits `[batch_size, list_size]`.
  """

  def __init__(self, hidden_units: Sequence[int] = (16,), **kwargs):
    """Create the layer.

    Args:
      hidden_units: widths of the ReLU hidden layers. An empty sequence makes the tower a
        single Dense(1).
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      ValueError: if a width is not an int > 0.
    """
    super().__init__(**kwargs)
    self.hidden_units = check_units("TaskTower", "hidden_units", hidden_units, allow_empty=True)
    self._hidden_layers = [
      tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")
      for i, units in enumerate(self.hidden_units)
    ]
    self._logit_layer = tf.keras.layers.Dense(1, name="logit")

  @property
  def dense_layers(self) -> list:
    """The hidden Dense layers followed by the Dense(1) logit layer."""
    return self._hidden_layers + [self._logit_layer]

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3 or input_shape[-1] is None:
      raise ValueError(
        "TaskTower: h must have shape [batch_size, list_size, H] with a known H, "
        f"received shape {input_shape}."
      )
    width = input_shape[-1]
    for layer in self.dense_layers:
      layer.build(tf.TensorShape([None, None, width]))
      width = layer.units
    super().build(input_shape)

  def call(self, h):
    for layer in self.dense_layers:
      h = layer(h)
    return tf.squeeze(h, axis=-1)

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1]

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_units": list(self.hidden_units)})
    return config
