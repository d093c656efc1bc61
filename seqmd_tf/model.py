"""Build a multi-task ranking scorer from a feature spec and a ModelConfig.

The scorer is a functional Keras model: parsed features (see `seqmd_tf.data.parse_elwc`) ->
{task: logits [batch_size, list_size], ..., "score": [batch_size, list_size]}.
"""

from typing import Dict

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.data import MASK_FEATURE
from seqmd_tf.feature_spec import FeatureSpec
from seqmd_tf.features import FeatureEncoder
from seqmd_tf.layers.region_mask import RegionMask
from seqmd_tf.models import adatt, aitm, esmm, mmoe, ple, seq, shared_bottom, single_task

SCORE_OUTPUT = "score"

# Model name -> function(x, mask, task_names, config) -> {task: logits}. "seq" and "seq_md"
# share one body: SEQ+MD is SEQ with the region mask on (the default --region_mask=element).
# Every body gets the region-masked input when --region_mask is not "off", so each baseline
# also runs with the MD module in front. The keys are seqmd_tf.config.MODEL_NAMES.
MODEL_BODIES = {
    "single_task": single_task.build_logits,
    "shared_bottom": shared_bottom.build_logits,
    "mmoe": mmoe.build_logits,
    "ple": ple.build_logits,
    "adatt": adatt.build_logits,
    "esmm": esmm.build_logits,
    "aitm": aitm.build_logits,
    "seq_md": seq.build_logits,
    "seq": seq.build_logits,
}
MODELS = tuple(MODEL_BODIES)

_INPUT_DTYPES = {"string": tf.string, "int64": tf.int64, "float": tf.float32}


def build_inputs(spec: FeatureSpec) -> Dict[str, tf.keras.Input]:
  """Return one Keras Input per spec feature plus the item mask; the list dimension is free."""
  inputs = {MASK_FEATURE: tf.keras.Input(shape=(None,), dtype=tf.bool, name=MASK_FEATURE)}
  for feature in spec.features:
    if feature.is_context:
      shape = (None,) if feature.multivalent else (1,)
    else:
      shape = (None, 1)
    inputs[feature.name] = tf.keras.Input(shape=shape, dtype=_INPUT_DTYPES[feature.dtype],
                                          name=feature.name)
  return inputs


def apply_region_mask(encoded: Dict[str, tf.Tensor], encoder: FeatureEncoder,
                      config: ModelConfig) -> tf.Tensor:
  """Return the model input [batch_size, list_size, D]: invariant features, then driven ones,
  the driven ones rescaled by the region mask unless `config.region_mask` is "off"."""
  driven = encoded["driven"]
  if config.region_mask != "off":
    region_mask = RegionMask(driven_dims=encoder.driven_dims,
                             hidden_units=config.mask_hidden_units,
                             granularity=config.region_mask, gate=config.mask_gate,
                             name="region_mask")
    driven = region_mask((encoded["region"], driven))
  return tf.concat([encoded["invariant"], driven], axis=-1)


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class ScoreBlend(tf.keras.layers.Layer):
  """Serving score [batch_size, list_size] = sum over tasks of weight * logits.

  The default weights (0, ..., 0, 1) sort by the last, most valuable task of the funnel.
  """

  def __init__(self, weights, **kwargs):
    super().__init__(**kwargs)
    self.task_weights = [float(w) for w in weights]

  def call(self, logits):
    return tf.add_n([w * t for w, t in zip(self.task_weights, logits)])

  def get_config(self):
    config = super().get_config()
    config.update({"weights": self.task_weights})
    return config


def score_weights(config: ModelConfig, num_tasks: int) -> list:
  if config.score_weights is None:
    return [0.0] * (num_tasks - 1) + [1.0]
  return list(config.score_weights)


def build_scorer(spec: FeatureSpec, config: ModelConfig) -> tf.keras.Model:
  """Build the scorer named by `config.model` for `spec`."""
  config.validate(len(spec.tasks))
  if config.model not in MODELS:
    raise ValueError(f"--model must be one of {MODELS}, got {config.model!r}")

  inputs = build_inputs(spec)
  encoder = FeatureEncoder(spec.to_json_dict(), name="feature_encoder")
  encoded = encoder(inputs)
  x = apply_region_mask(encoded, encoder, config)

  logits = MODEL_BODIES[config.model](x, inputs[MASK_FEATURE], spec.tasks, config)

  outputs = {task: tf.keras.layers.Activation("linear", name=task)(logits[task])
             for task in spec.tasks}
  outputs[SCORE_OUTPUT] = ScoreBlend(score_weights(config, len(spec.tasks)), name=SCORE_OUTPUT)(
      [outputs[task] for task in spec.tasks])
  return tf.keras.Model(inputs=inputs, outputs=outputs, name=config.model)


def feature_encoder(scorer: tf.keras.Model) -> FeatureEncoder:
  return scorer.get_layer("feature_encoder")


def region_mask_layer(scorer: tf.keras.Model):
  """Return the scorer's RegionMask layer, or None when the region mask is off."""
  try:
    return scorer.get_layer("region_mask")
  except ValueError:
    return None
