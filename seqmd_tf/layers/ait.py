"""AITM's Adaptive Information Transfer (AIT): each task attends over its own representation
and the information transferred from the previous task."""

import math

import tensorflow as tf

from seqmd_tf.layers.validation import check_dropout, check_int


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class AdaptiveInformationTransfer(tf.keras.layers.Layer):
  """The AIT modules of AITM along the funnel (Xi et al., "Modeling the Sequential Dependence
  among Audience Multi-step Conversions with Multi-task Learning in Targeted Display
  Advertising", KDD 2021).

  With q_t the output of task t's own tower (width d), for every item:

      z_1 = q_1
      p_{t-1} = ReLU(Dense_{t-1}(z_{t-1}))              transferred information, width d
      a_u = <h_2(u), h_3(u)> / sqrt(k)                  u in (q_t, p_{t-1})
      w = softmax of (a_q, a_p)
      z_t = w_q h_1(q_t) + w_p h_1(p_{t-1})             t = 2..T, width k

  Each step t-1 -> t has its own transfer layer. h_1, h_2 and h_3 are bias-free linear maps
  from d to k = `units` dimensions, one set shared by all steps, as in the authors'
  TensorFlow code (xidongbo/AITM, AITM_standard.py), which also uses k = d. That code adds
  batch normalization to the transfer layer, which this layer leaves out, like every MLP in
  this project. z_t depends on task t-1 and, through z_{t-1}, on the earlier tasks, never on
  a later task.

  AITM's behavioral expectation calibrator is a loss term, not part of this layer: it is the
  hinge max(0, p_t - p_{t-1}) of `seqmd_tf.losses.dpr_loss`.

  Call arguments:
    q: a list of T float32 `[batch_size, list_size, d]` tensors, q_1, ..., q_T in funnel
      order, all of the same width d.
    training: whether dropout is active after the transfer layers.
    return_weights: if True, also return the attention weights.

  Returns:
    A list of T tensors z_1, ..., z_T: z_1 = q_1 is float32 `[batch_size, list_size, d]`,
    the others `[batch_size, list_size, units]`. With `return_weights=True`, the pair
    (that list, weights), where weights lists T - 1 float32 `[batch_size, list_size, 2]`
    tensors w for t = 2..T in the order (q_t, p_{t-1}).
  """

  def __init__(self, num_tasks: int, units: int = 32, dropout: float = 0.0, **kwargs):
    """Create the layer.

    Args:
      num_tasks: T, at least 1.
      units: k, the width of h_1, h_2, h_3 and of z_t for t >= 2, at least 1.
      dropout: dropout rate in [0, 1) after each transfer layer during training.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      ValueError: if an argument breaks the rule stated for it.
    """
    super().__init__(**kwargs)
    self.num_tasks = check_int("AdaptiveInformationTransfer", "num_tasks", num_tasks, minimum=1)
    self.units = check_int("AdaptiveInformationTransfer", "units", units, minimum=1)
    self.dropout = check_dropout("AdaptiveInformationTransfer", dropout)
    # Created in build, because their width must match q's, which is only known there.
    self._transfer_layers = []
    self._dropout_layer = None
    if self.dropout > 0.0:
      self._dropout_layer = tf.keras.layers.Dropout(self.dropout, name="transfer_dropout")
    self._value_layer = tf.keras.layers.Dense(self.units, use_bias=False, name="value")
    self._query_layer = tf.keras.layers.Dense(self.units, use_bias=False, name="query")
    self._key_layer = tf.keras.layers.Dense(self.units, use_bias=False, name="key")

  @property
  def transfer_layers(self) -> list:
    """The T - 1 Dense layers that map z_{t-1} to p_{t-1} for t = 2..T, empty until built."""
    return list(self._transfer_layers)

  @property
  def attention_layers(self) -> tuple:
    """The Dense layers h_1 (values), h_2 (queries) and h_3 (keys) shared by all steps."""
    return self._value_layer, self._query_layer, self._key_layer

  def build(self, input_shape):
    shapes = [tf.TensorShape(shape) for shape in input_shape]
    if len(shapes) != self.num_tasks:
      raise ValueError(
        f"AdaptiveInformationTransfer: q must be a list of num_tasks = {self.num_tasks} "
        f"tensors, one per task, received {len(shapes)}."
      )
    widths = {shape[-1] for shape in shapes}
    if any(shape.rank != 3 for shape in shapes) or len(widths) != 1 or None in widths:
      raise ValueError(
        "AdaptiveInformationTransfer: every q_t must have shape [batch_size, list_size, d] "
        f"with one known d for all tasks, received shapes {[str(s) for s in shapes]}."
      )
    width = widths.pop()

    for step in range(1, self.num_tasks):
      transfer = tf.keras.layers.Dense(width, activation="relu", name=f"transfer_{step}")
      transfer.build(tf.TensorShape([None, None, width if step == 1 else self.units]))
      self._transfer_layers.append(transfer)
    for layer in self.attention_layers:
      layer.build(tf.TensorShape([None, None, None, width]))
    super().build(input_shape)

  def attend(self, q: tf.Tensor, transferred: tf.Tensor):
    """Compute one step's attention over (q_t, p_{t-1}).

    Args:
      q: float32 `[batch_size, list_size, d]`.
      transferred: float32 `[batch_size, list_size, d]`, p_{t-1}.

    Returns:
      The pair (z_t float32 `[batch_size, list_size, units]`, w float32
      `[batch_size, list_size, 2]`).
    """
    candidates = tf.stack([q, transferred], axis=2)  # [batch_size, list_size, 2, d]
    values = self._value_layer(candidates)
    scores = tf.reduce_sum(self._query_layer(candidates) * self._key_layer(candidates), axis=-1)
    weights = tf.nn.softmax(scores / math.sqrt(self.units), axis=-1)
    return tf.einsum("blu,bluk->blk", weights, values), weights

  def call(self, q, training=None, return_weights=False):
    q = list(q)
    outputs = [q[0]]
    all_weights = []
    for step in range(1, self.num_tasks):
      transferred = self._transfer_layers[step - 1](outputs[-1])
      if self._dropout_layer is not None:
        transferred = self._dropout_layer(transferred, training=training)
      z, weights = self.attend(q[step], transferred)
      outputs.append(z)
      all_weights.append(weights)

    if return_weights:
      return outputs, all_weights
    return outputs

  def compute_output_shape(self, input_shape):
    shapes = [tf.TensorShape(shape) for shape in input_shape]
    return shapes[:1] + [shape[:-1].concatenate([self.units]) for shape in shapes[1:]]

  def get_config(self):
    config = super().get_config()
    config.update({"num_tasks": self.num_tasks, "units": self.units, "dropout": self.dropout})
    return config
