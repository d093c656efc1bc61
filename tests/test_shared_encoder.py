"""Tests for the SharedEncoder layer."""

import numpy as np
import pytest
import tensorflow as tf

from seqmd_tf.layers import SharedEncoder
from seqmd_tf.layers.shared_encoder import masked_list_mean

FEATURE_WIDTH = 3

# Second list: items 2 and 3 are padding. Third list: all padding.
MASK = np.array(
  [
    [True, True, True, True],
    [True, True, False, False],
    [False, False, False, False],
  ]
)


def _features(seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=MASK.shape + (FEATURE_WIDTH,)).astype(np.float32)


def _reference_encoder(layer, x, mask, list_context):
  """Compute the encoder in numpy from the layer's Dense weights (ReLU, no dropout)."""
  x = np.asarray(x, dtype=np.float64)
  if list_context:
    weights = mask[:, :, np.newaxis].astype(np.float64)
    count = weights.sum(axis=1, keepdims=True)
    total = (x * weights).sum(axis=1, keepdims=True)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    x = np.concatenate([x, x - mean], axis=-1)

  weights = layer.get_weights()
  for kernel, bias in zip(weights[0::2], weights[1::2]):
    x = np.maximum(x @ kernel + bias, 0.0)
  return x


@pytest.mark.parametrize("list_context", [False, True])
def test_output_matches_numpy_reference(list_context):
  x = _features()
  layer = SharedEncoder(hidden_units=(6, 5), list_context=list_context)

  z = layer(tf.constant(x), mask=tf.constant(MASK)).numpy()

  assert z.shape == (3, 4, 5)
  np.testing.assert_allclose(
    z, _reference_encoder(layer, x, MASK, list_context), rtol=1e-5, atol=1e-5
  )


def test_list_mean_excludes_padded_items():
  x = _features()

  mean = masked_list_mean(tf.constant(x), tf.constant(MASK)).numpy()

  assert mean.shape == (3, 1, FEATURE_WIDTH)
  np.testing.assert_allclose(mean[0, 0], x[0].mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(mean[1, 0], x[1, :2].mean(axis=0), rtol=1e-6)


def test_list_mean_of_all_padding_list_is_zero():
  x = _features()
  x[2] = np.inf

  mean = masked_list_mean(tf.constant(x), tf.constant(MASK)).numpy()

  np.testing.assert_array_equal(mean[2], 0.0)


def test_list_mean_without_mask_averages_all_items():
  x = _features()

  mean = masked_list_mean(tf.constant(x), None).numpy()

  np.testing.assert_allclose(mean[:, 0], x.mean(axis=1), rtol=1e-6)


def test_padded_item_values_do_not_change_valid_outputs():
  x = _features()
  changed = x.copy()
  changed[1, 2:] = 1000.0
  layer = SharedEncoder(hidden_units=(6,), list_context=True)

  z = layer(tf.constant(x), mask=tf.constant(MASK)).numpy()
  z_changed = layer(tf.constant(changed), mask=tf.constant(MASK)).numpy()

  np.testing.assert_allclose(z_changed[1, :2], z[1, :2], rtol=1e-6)
  np.testing.assert_allclose(z_changed[0], z[0], rtol=1e-6)


def test_all_padding_list_gives_finite_output():
  x = _features()
  layer = SharedEncoder(hidden_units=(6,), list_context=True)

  z = layer(tf.constant(x), mask=tf.constant(MASK)).numpy()

  assert np.all(np.isfinite(z))


def test_missing_mask_treats_all_items_as_valid():
  x = tf.constant(_features())
  layer = SharedEncoder(hidden_units=(6,), list_context=True)

  z_without_mask = layer(x).numpy()
  z_all_valid = layer(x, mask=tf.ones(MASK.shape, tf.bool)).numpy()

  np.testing.assert_allclose(z_without_mask, z_all_valid, rtol=1e-6)


def test_dropout_is_active_only_in_training():
  x = tf.constant(_features())
  layer = SharedEncoder(hidden_units=(64,), dropout=0.5)

  inference = layer(x, training=False).numpy()
  training = layer(x, training=True).numpy()

  np.testing.assert_allclose(
    inference, _reference_encoder(layer, x, MASK, False), rtol=1e-5, atol=1e-5
  )
  assert not np.allclose(training, inference)


def test_config_round_trip_gives_same_output():
  x = tf.constant(_features())
  mask = tf.constant(MASK)
  layer = SharedEncoder(
    hidden_units=(6, 5), dropout=0.2, activation="tanh", list_context=True, name="encoder"
  )
  layer(x, mask=mask)

  config = layer.get_config()
  restored = SharedEncoder.from_config(config)
  restored(x, mask=mask)
  restored.set_weights(layer.get_weights())

  assert restored.get_config() == config
  assert config["hidden_units"] == [6, 5]
  assert config["dropout"] == 0.2
  assert config["activation"] == "tanh"
  assert config["list_context"] is True
  np.testing.assert_array_equal(restored(x, mask=mask).numpy(), layer(x, mask=mask).numpy())


def test_compute_output_shape():
  layer = SharedEncoder(hidden_units=(6, 5))

  shape = layer.compute_output_shape(tf.TensorShape([None, 4, FEATURE_WIDTH]))

  assert shape.as_list() == [None, 4, 5]


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"hidden_units": []}, "hidden_units must be a non-empty list"),
    ({"hidden_units": [64, 0]}, "every entry of hidden_units must be an int > 0"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), received 1.0"),
  ],
)
def test_invalid_argument_raises(kwargs, message):
  with pytest.raises(ValueError) as error:
    SharedEncoder(**kwargs)

  assert message in str(error.value)


def test_single_number_for_hidden_units_raises_type_error():
  with pytest.raises(TypeError) as error:
    SharedEncoder(hidden_units=64)

  assert "Write [64] for a single layer" in str(error.value)


def test_input_of_wrong_rank_raises():
  layer = SharedEncoder(hidden_units=(6,))

  with pytest.raises(ValueError) as error:
    layer(tf.zeros([2, FEATURE_WIDTH]))

  assert "[batch_size, list_size, D]" in str(error.value)
