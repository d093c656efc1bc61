"""Multi-distribution (MD) module: a region-conditioned mask over region-driven features.

A mask generator maps the region representation of each list to one multiplier per
region-driven input dimension:

    m  = gate(MLP(region_repr))       [batch_size, 1, D_driven], broadcast over the list
    x~ = m * x_driven                 [batch_size, list_size, D_driven]

The layer takes no task input, so any multi-task model can put it in front of its shared
encoder.
"""

import numbers
from collections.abc import Sequence

import tensorflow as tf

GRANULARITIES = ("element", "feature")
GATES = ("2sigmoid", "sigmoid")


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class RegionMask(tf.keras.layers.Layer):
  """Rescales region-driven features by a mask generated from the list's region.

  Gates:
    - `"2sigmoid"`: m = 2 * sigmoid(a), in (0, 2), so the mask can damp or amplify a
      feature. The last Dense layer's kernel and bias start at zero, so a = 0 and the
      mask is exactly 1.0 (no change) at initialization.
    - `"sigmoid"`: m = sigmoid(a), in (0, 1), so the mask can only damp. With the same
      zero initialization it starts at 0.5, which halves every region-driven feature.

  Granularities:
    - `"element"`: one multiplier per input dimension (D_driven outputs).
    - `"feature"`: one multiplier per region-driven feature, repeated over that
      feature's slice of `driven_dims[i]` dimensions (len(driven_dims) outputs).

  Call arguments:
    inputs: a pair `(region_repr, x_driven)`.
      region_repr: float32 `[batch_size, D_region]`, the encoded region and other
        list-level context features that feed the mask generator.
      x_driven: float32 `[batch_size, list_size, D_driven]`, the concatenated encoded
        region-driven features, in the order of `driven_dims`.

  Returns:
    float32 `[batch_size, list_size, D_driven]`: `x_driven` times the mask.
  """

  def __init__(
    self,
    driven_dims: Sequence[int],
    hidden_units: Sequence[int] = (32,),
    granularity: str = "element",
    gate: str = "2sigmoid",
    **kwargs,
  ):
    """Create the layer.

    Args:
      driven_dims: width of each region-driven feature's encoded slice, in the
        order the slices are concatenated in `x_driven`. D_driven = sum(driven_dims).
      hidden_units: widths of the ReLU hidden layers of the mask generator. An empty
        sequence makes the generator a single linear layer.
      granularity: `"element"` or `"feature"`, see the class docstring.
      gate: `"2sigmoid"` or `"sigmoid"`, see the class docstring.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      TypeError: if `driven_dims` or `hidden_units` is a single number instead of a list.
      ValueError: if an argument breaks the rule stated for it.
    """
    super().__init__(**kwargs)
    self.driven_dims = _validate_positive_ints("driven_dims", driven_dims, allow_empty=False)
    self.hidden_units = _validate_positive_ints("hidden_units", hidden_units, allow_empty=True)
    if granularity not in GRANULARITIES:
      raise ValueError(
        f"RegionMask: granularity must be one of {GRANULARITIES}, received {granularity!r}."
      )
    if gate not in GATES:
      raise ValueError(f"RegionMask: gate must be one of {GATES}, received {gate!r}.")
    self.granularity = granularity
    self.gate = gate

    self.driven_width = sum(self.driven_dims)
    num_outputs = self.driven_width if granularity == "element" else len(self.driven_dims)
    self._hidden_layers = [
      tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")
      for i, units in enumerate(self.hidden_units)
    ]
    # Zero kernel and bias make the pre-activation exactly 0 for every region at
    # initialization, so the "2sigmoid" mask starts at exactly 1.0.
    self._output_layer = tf.keras.layers.Dense(
      num_outputs,
      kernel_initializer="zeros",
      bias_initializer="zeros",
      name="mask_logits",
    )

  def build(self, input_shape):
    region_shape, driven_shape = (tf.TensorShape(shape) for shape in input_shape)
    if region_shape.rank != 2:
      raise ValueError(
        "RegionMask: region_repr must have shape [batch_size, D_region], "
        f"received shape {region_shape}."
      )
    if driven_shape.rank != 3 or driven_shape[-1] != self.driven_width:
      raise ValueError(
        "RegionMask: x_driven must have shape [batch_size, list_size, "
        f"sum(driven_dims)={self.driven_width}], received shape {driven_shape}. "
        "Check that driven_dims lists the encoded width of every region-driven "
        "feature."
      )

    width = region_shape[-1]
    for layer in self._hidden_layers:
      layer.build(tf.TensorShape([None, width]))
      width = layer.units
    self._output_layer.build(tf.TensorShape([None, width]))
    super().build(input_shape)

  def mask_values(self, region_repr: tf.Tensor) -> tf.Tensor:
    """Compute the mask for each region representation.

    Used by `call` and to draw the per-region mask heatmap.

    Args:
      region_repr: float32 `[n, D_region]`.

    Returns:
      float32 `[n, D_driven]`, one multiplier per region-driven input dimension. With
      granularity `"feature"`, each feature's slice repeats one value.
    """
    activations = region_repr
    for layer in self._hidden_layers:
      activations = layer(activations)
    mask_logits = self._output_layer(activations)

    mask = tf.sigmoid(mask_logits)
    if self.gate == "2sigmoid":
      mask = 2.0 * mask

    if self.granularity == "feature":
      mask = tf.repeat(mask, repeats=self.driven_dims, axis=-1)
    return mask

  def call(self, inputs):
    region_repr, x_driven = inputs
    mask = self.mask_values(region_repr)
    return x_driven * mask[:, tf.newaxis, :]

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape[1])

  def get_config(self):
    config = super().get_config()
    config.update(
      {
        "driven_dims": list(self.driven_dims),
        "hidden_units": list(self.hidden_units),
        "granularity": self.granularity,
        "gate": self.gate,
      }
    )
    return config


def _validate_positive_ints(argument: str, values: Sequence[int], allow_empty: bool) -> tuple:
  """Return `values` as a tuple of ints, raising unless it is a list of ints > 0."""
  if isinstance(values, (numbers.Number, str)):
    raise TypeError(
      f"RegionMask: {argument} must be a list of ints, received {values!r}. "
      f"Write [{values!r}] for a single entry."
    )
  values = tuple(values)
  if not values and not allow_empty:
    raise ValueError(f"RegionMask: {argument} must list at least one width, received {values!r}.")
  for value in values:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
      raise ValueError(
        f"RegionMask: every entry of {argument} must be an int > 0, received {values!r}."
      )
  return tuple(int(value) for value in values)
