"""Feature encoder: raw parsed features -> region-driven, region-invariant and region tensors.

Every transform (vocabulary lookup, hashing, log, clipping, standardization) runs inside this
Keras layer, so the exported serving graph applies exactly the transforms used in training.
"""

from typing import Dict, List

import numpy as np
import tensorflow as tf

from seqmd_tf.data import MASK_FEATURE
from seqmd_tf.feature_spec import Feature, FeatureSpec, parse_feature_spec

# Added to the variance before the square root, so a constant feature standardizes to 0, not NaN.
_VARIANCE_EPSILON = 1e-6


def _transform_numeric(value: tf.Tensor, feature: Feature) -> tf.Tensor:
  """Apply the spec's transform and clip to a numeric feature, before standardization."""
  value = tf.cast(value, tf.float32)
  if feature.transform == "log1p":
    value = tf.math.log1p(tf.maximum(value, 0.0))
  elif feature.transform == "symlog":
    value = tf.sign(value) * tf.math.log1p(tf.abs(value))
  if feature.clip is not None:
    value = tf.clip_by_value(value, feature.clip[0], feature.clip[1])
  # A NaN or infinite input would poison every gradient; it counts as the feature default.
  finite = tf.math.is_finite(value)
  return tf.where(finite, value, tf.cast(feature.default_value, tf.float32))


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class FeatureEncoder(tf.keras.layers.Layer):
  """Encode the features of a feature spec for a list of items.

  Call with the features returned by `seqmd_tf.data.parse_elwc`. Returns a dict:
    "driven": [batch_size, list_size, D_driven] float32, the region-driven features;
    "invariant": [batch_size, list_size, D_invariant] float32, the region-invariant features;
    "region": [batch_size, D_region] float32, the region embedding (plus the spec's
      mask_context_features), the input of the region mask generator.
  Context features are broadcast to every item of their list.
  """

  def __init__(self, feature_spec: dict, **kwargs):
    super().__init__(**kwargs)
    self.feature_spec = feature_spec
    self.spec: FeatureSpec = parse_feature_spec(feature_spec, path=f"<{self.name} config>")
    self._lookups: Dict[str, tf.keras.layers.Layer] = {}
    self._embeddings: Dict[str, tf.keras.layers.Layer] = {}
    self._sizes: Dict[str, int] = {}
    for feature in self.spec.features:
      if feature.type != "numeric":
        self._build_categorical(feature)

  def _build_categorical(self, feature: Feature) -> None:
    key = _layer_key(feature.name)
    if feature.type == "hashed":
      self._lookups[key] = tf.keras.layers.Hashing(feature.hash_buckets, name=f"hash_{key}")
      size = feature.hash_buckets
    else:
      lookup_cls = (tf.keras.layers.StringLookup if feature.dtype == "string"
                    else tf.keras.layers.IntegerLookup)
      self._lookups[key] = lookup_cls(
          vocabulary=list(feature.vocabulary), num_oov_indices=feature.num_oov_buckets,
          mask_token=None, name=f"lookup_{key}")
      size = len(feature.vocabulary) + feature.num_oov_buckets
    if feature.multivalent:
      # A bag of values: multi-hot over the vocabulary, projected to embedding_dim.
      self._embeddings[key] = tf.keras.layers.Dense(
          feature.embedding_dim, use_bias=False, name=f"multi_hot_{key}")
    else:
      self._embeddings[key] = tf.keras.layers.Embedding(
          size, feature.embedding_dim, name=f"embedding_{key}")
    self._sizes[key] = size

  def build(self, input_shape):
    self._moments = {}
    for feature in self.spec.features:
      if feature.type == "numeric":
        key = _layer_key(feature.name)
        mean = self.add_weight(f"{key}_mean", shape=(), initializer="zeros", trainable=False)
        variance = self.add_weight(f"{key}_variance", shape=(), initializer="ones",
                                   trainable=False)
        self._moments[key] = (mean, variance)
    super().build(input_shape)

  @property
  def driven_dims(self) -> List[int]:
    """Width of each region-driven feature's slice of "driven", in spec order."""
    return [_width(f) for f in self.spec.features if f.group == "region_driven"]

  @property
  def driven_feature_names(self) -> List[str]:
    return [f.name for f in self.spec.features if f.group == "region_driven"]

  def _encode(self, feature: Feature, value: tf.Tensor) -> tf.Tensor:
    """Encode one feature: [..., 1] (multivalent: [batch_size, n]) -> [..., width] float32."""
    key = _layer_key(feature.name)
    if feature.type == "numeric":
      value = _transform_numeric(value, feature)
      if feature.normalize:
        mean, variance = self._moments[key]
        value = (value - mean) * tf.math.rsqrt(variance + _VARIANCE_EPSILON)
      return value
    if feature.multivalent:
      ids = self._lookups[key](value)
      present = tf.not_equal(value, feature.default_value)
      one_hot = tf.one_hot(tf.where(present, ids, -1), self._sizes[key])
      multi_hot = tf.reduce_max(one_hot, axis=-2)
      return self._embeddings[key](multi_hot)
    ids = self._lookups[key](value)
    return tf.squeeze(self._embeddings[key](ids), axis=-2)

  def call(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    mask = features[MASK_FEATURE]
    list_size = tf.shape(mask)[1]
    encoded = {}
    for feature in self.spec.features:
      value = self._encode(feature, features[feature.name])
      if feature.is_context:
        value = tf.tile(value[:, tf.newaxis, :], [1, list_size, 1])
      encoded[feature.name] = value
    return {
        "driven": self._concat([encoded[f.name] for f in self.spec.features
                                if f.group == "region_driven"], mask),
        "invariant": self._concat([encoded[f.name] for f in self.spec.features
                                   if f.group == "region_invariant"], mask),
        "region": self.region_representation(features),
    }

  def region_representation(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Return [batch_size, D_region]: the region embedding and the mask context features."""
    parts = []
    for name in (self.spec.region_feature,) + self.spec.mask_context_features:
      feature = self.spec.feature(name)
      parts.append(self._encode(feature, features[name]))
    return tf.concat(parts, axis=-1)

  def region_values_representation(self, region_values) -> tf.Tensor:
    """Return [n, D_region] for the given region values, other mask inputs at their defaults."""
    region_values = tf.reshape(tf.constant(region_values), [-1, 1])
    n = tf.shape(region_values)[0]
    features = {self.spec.region_feature: region_values}
    for name in self.spec.mask_context_features:
      feature = self.spec.feature(name)
      features[name] = tf.fill([n, 1], feature.default_value)
    return self.region_representation(features)

  @staticmethod
  def _concat(parts: List[tf.Tensor], mask: tf.Tensor) -> tf.Tensor:
    if not parts:
      return tf.zeros(tf.concat([tf.shape(mask), [0]], axis=0), tf.float32)
    return tf.concat(parts, axis=-1)

  def adapt(self, dataset: tf.data.Dataset, max_batches: int = 50) -> Dict[str, tuple]:
    """Set each normalized numeric feature's mean and variance from training batches.

    Statistics are taken over real items only (padding excluded) for example features and over
    lists for context features, after the transform and clip. Returns {name: (mean, variance)}.
    """
    if not self.built:
      self.build(None)
    sums = {}
    for batch_index, (features, _) in enumerate(dataset):
      if batch_index >= max_batches:
        break
      mask = features[MASK_FEATURE].numpy()
      for feature in self.spec.features:
        if feature.type != "numeric" or not feature.normalize:
          continue
        value = _transform_numeric(features[feature.name], feature).numpy()
        value = value[..., 0][mask] if not feature.is_context else value.reshape(-1)
        total = sums.setdefault(feature.name, [0.0, 0.0, 0])
        total[0] += float(np.sum(value, dtype=np.float64))
        total[1] += float(np.sum(np.square(value, dtype=np.float64)))
        total[2] += value.size
    moments = {}
    for name, (value_sum, square_sum, count) in sums.items():
      if count == 0:
        continue
      mean = value_sum / count
      variance = max(square_sum / count - mean * mean, 0.0)
      self._moments[_layer_key(name)][0].assign(mean)
      self._moments[_layer_key(name)][1].assign(variance)
      moments[name] = (mean, variance)
    return moments

  def get_config(self):
    config = super().get_config()
    config.update({"feature_spec": self.feature_spec})
    return config


def _layer_key(name: str) -> str:
  """Return a name usable in Keras weight and layer names (feature names may hold '/' or '.')."""
  return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _width(feature: Feature) -> int:
  return 1 if feature.type == "numeric" else feature.embedding_dim
