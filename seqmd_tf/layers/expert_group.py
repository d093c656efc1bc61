"""Experts of the mixture-of-experts models: several same-shaped MLPs on one input."""

from collections.abc import Sequence

import tensorflow as tf

from seqmd_tf.layers.validation import check_dropout, check_int, check_units


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class ExpertGroup(tf.keras.layers.Layer):
  """Applies `num_experts` ReLU MLPs with separate weights to every item.

      experts[:, :, n, :] = MLP_n(x)        n = 0 .. num_experts - 1

  Each MLP has the widths `units` and a ReLU after every layer, the last included. The
  experts run as one batched matmul per layer, because layer l keeps the kernels of all
  experts in one weight of shape `[num_experts, in_width, units[l]]`.

  Call arguments:
    x: float32 `[batch_size, list_size, D]`, the input of every expert.
    training: whether dropout is active.

  Returns:
    float32 `[batch_size, list_size, num_experts, units[-1]]`.
  """

  def __init__(
    self,
    num_experts: int,
    units: Sequence[int] = (64,),
    dropout: float = 0.0,
    **kwargs,
  ):
    """Create the layer.

    Args:
      num_experts: number of experts, at least 1.
      units: widths of each expert's Dense layers, at least one. The last width is H.
      dropout: dropout rate in [0, 1) applied after every layer during training.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      ValueError: if an argument breaks the rule stated for it.
    """
    super().__init__(**kwargs)
    self.num_experts = check_int("ExpertGroup", "num_experts", num_experts, minimum=1)
    self.units = check_units("ExpertGroup", "units", units, allow_empty=False)
    self.dropout = check_dropout("ExpertGroup", dropout)
    self._dropout_layer = None
    if self.dropout > 0.0:
      self._dropout_layer = tf.keras.layers.Dropout(self.dropout, name="dropout")
    self.kernels = []
    self.biases = []

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3 or input_shape[-1] is None:
      raise ValueError(
        "ExpertGroup: x must have shape [batch_size, list_size, D] with a known D, "
        f"received shape {input_shape}."
      )

    width = input_shape[-1]
    for i, units in enumerate(self.units):
      # For a kernel of shape [N, in, out] Keras counts fan_in = N * in and fan_out = N * out.
      # A scale of N cancels that factor, so each expert starts from Glorot uniform over its
      # own [in, out] kernel, as a Dense layer would.
      initializer = tf.keras.initializers.VarianceScaling(
        scale=float(self.num_experts), mode="fan_avg", distribution="uniform"
      )
      self.kernels.append(
        self.add_weight(
          name=f"kernel_{i}", shape=[self.num_experts, width, units], initializer=initializer
        )
      )
      self.biases.append(
        self.add_weight(name=f"bias_{i}", shape=[self.num_experts, units], initializer="zeros")
      )
      width = units
    super().build(input_shape)

  def call(self, x, training=None):
    hidden = tf.einsum("bld,ndh->blnh", x, self.kernels[0]) + self.biases[0]
    hidden = self._activate(hidden, training)
    for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
      hidden = tf.einsum("blnd,ndh->blnh", hidden, kernel) + bias
      hidden = self._activate(hidden, training)
    return hidden

  def _activate(self, hidden, training):
    hidden = tf.nn.relu(hidden)
    if self._dropout_layer is not None:
      hidden = self._dropout_layer(hidden, training=training)
    return hidden

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1].concatenate([self.num_experts, self.units[-1]])

  def get_config(self):
    config = super().get_config()
    config.update(
      {"num_experts": self.num_experts, "units": list(self.units), "dropout": self.dropout}
    )
    return config
