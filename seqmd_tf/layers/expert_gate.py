"""Gate of the mixture-of-experts models: a per-item softmax over experts."""

import tensorflow as tf

from seqmd_tf.layers.validation import check_int


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class ExpertGate(tf.keras.layers.Layer):
  """Mixes experts with weights computed from a gate input, one set of weights per item.

      w   = softmax(Dense(gate_input))             [batch_size, list_size, num_experts]
      out = sum over n of w_n * experts[:, :, n]    [batch_size, list_size, H]

  MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
  Mixture-of-Experts", KDD 2018) has one such gate per task. PLE and AdaTT use one per task
  and level, plus one for the shared experts below the last level.

  Call arguments:
    inputs: a pair `(gate_input, experts)`.
      gate_input: float32 `[batch_size, list_size, D]`.
      experts: float32 `[batch_size, list_size, num_experts, H]`.
    return_weights: if True, also return w.

  Returns:
    float32 `[batch_size, list_size, H]`, or the pair (that tensor, w) with
    `return_weights=True`.
  """

  def __init__(self, num_experts: int, **kwargs):
    """Create the layer.

    Args:
      num_experts: number of experts the gate mixes, at least 1.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      ValueError: if `num_experts` is not an int >= 1.
    """
    super().__init__(**kwargs)
    self.num_experts = check_int("ExpertGate", "num_experts", num_experts, minimum=1)
    self._gate_layer = tf.keras.layers.Dense(self.num_experts, name="gate_logits")

  @property
  def gate_layer(self) -> tf.keras.layers.Dense:
    """The Dense layer whose outputs are the softmax logits of the gate."""
    return self._gate_layer

  def build(self, input_shape):
    gate_shape, experts_shape = (tf.TensorShape(shape) for shape in input_shape)
    if gate_shape.rank != 3 or gate_shape[-1] is None:
      raise ValueError(
        "ExpertGate: gate_input must have shape [batch_size, list_size, D] with a known D, "
        f"received shape {gate_shape}."
      )
    if experts_shape.rank != 4 or experts_shape[2] != self.num_experts:
      raise ValueError(
        f"ExpertGate: experts must have shape [batch_size, list_size, num_experts="
        f"{self.num_experts}, H], received shape {experts_shape}."
      )
    self._gate_layer.build(gate_shape)
    super().build(input_shape)

  def gate_weights(self, gate_input: tf.Tensor) -> tf.Tensor:
    """Compute w.

    Args:
      gate_input: float32 `[batch_size, list_size, D]`.

    Returns:
      float32 `[batch_size, list_size, num_experts]`, summing to 1 over the last axis.
    """
    return tf.nn.softmax(self._gate_layer(gate_input), axis=-1)

  def call(self, inputs, return_weights=False):
    gate_input, experts = inputs
    weights = self.gate_weights(gate_input)
    mixed = tf.einsum("bln,blnh->blh", weights, experts)
    if return_weights:
      return mixed, weights
    return mixed

  def compute_output_shape(self, input_shape):
    gate_shape, experts_shape = (tf.TensorShape(shape) for shape in input_shape)
    return gate_shape[:-1].concatenate(experts_shape[-1:])

  def get_config(self):
    config = super().get_config()
    config.update({"num_experts": self.num_experts})
    return config
