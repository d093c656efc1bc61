"""Tests for the RegionMask layer (the MD module)."""

import numpy as np
import pytest
import tensorflow as tf

from seqmd_tf.layers import RegionMask

DRIVEN_DIMS = [2, 3, 1]
REGION_WIDTH = 4
LIST_SIZE = 5


def _inputs(seed=0, batch_size=3):
  rng = np.random.default_rng(seed)
  region_repr = rng.normal(size=(batch_size, REGION_WIDTH)).astype(np.float32)
  x_driven = rng.normal(size=(batch_size, LIST_SIZE, sum(DRIVEN_DIMS))).astype(np.float32)
  return tf.constant(region_repr), tf.constant(x_driven)


def _randomize_weights(layer, seed=1):
  rng = np.random.default_rng(seed)
  layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])


def _reference_mask(layer, region_repr, gate, granularity):
  """Compute the mask in numpy from the layer's weights (hidden layers, then output)."""
  weights = layer.get_weights()
  activations = np.asarray(region_repr)
  for kernel, bias in zip(weights[:-2:2], weights[1:-2:2]):
    activations = np.maximum(activations @ kernel + bias, 0.0)
  mask_logits = activations @ weights[-2] + weights[-1]

  mask = 1.0 / (1.0 + np.exp(-mask_logits))
  if gate == "2sigmoid":
    mask = 2.0 * mask
  if granularity == "feature":
    mask = np.repeat(mask, DRIVEN_DIMS, axis=-1)
  return mask


@pytest.mark.parametrize("granularity", ["element", "feature"])
def test_mask_is_one_at_initialization(granularity):
  region_repr, x_driven = _inputs()
  layer = RegionMask(DRIVEN_DIMS, hidden_units=(8,), granularity=granularity)

  masked = layer((region_repr, x_driven))

  np.testing.assert_array_equal(layer.mask_values(region_repr).numpy(), 1.0)
  np.testing.assert_array_equal(masked.numpy(), x_driven.numpy())


def test_sigmoid_gate_starts_at_half():
  region_repr, x_driven = _inputs()
  layer = RegionMask(DRIVEN_DIMS, gate="sigmoid")

  masked = layer((region_repr, x_driven))

  np.testing.assert_array_equal(layer.mask_values(region_repr).numpy(), 0.5)
  np.testing.assert_allclose(masked.numpy(), 0.5 * x_driven.numpy())


@pytest.mark.parametrize("gate", ["2sigmoid", "sigmoid"])
@pytest.mark.parametrize("granularity", ["element", "feature"])
@pytest.mark.parametrize("hidden_units", [(), (8,), (8, 6)])
def test_mask_matches_numpy_reference(gate, granularity, hidden_units):
  region_repr, x_driven = _inputs()
  layer = RegionMask(DRIVEN_DIMS, hidden_units=hidden_units, granularity=granularity, gate=gate)
  layer((region_repr, x_driven))
  _randomize_weights(layer)

  mask = layer.mask_values(region_repr).numpy()
  masked = layer((region_repr, x_driven)).numpy()

  expected_mask = _reference_mask(layer, region_repr, gate, granularity)
  assert mask.shape == (3, sum(DRIVEN_DIMS))
  np.testing.assert_allclose(mask, expected_mask, rtol=1e-5, atol=1e-6)
  # One mask per list, broadcast over its items.
  np.testing.assert_allclose(
    masked, x_driven.numpy() * expected_mask[:, np.newaxis, :], rtol=1e-5, atol=1e-6
  )


def test_feature_granularity_shares_value_per_slice():
  region_repr, x_driven = _inputs()
  layer = RegionMask(DRIVEN_DIMS, granularity="feature")
  layer((region_repr, x_driven))
  _randomize_weights(layer)

  mask = layer.mask_values(region_repr).numpy()

  price_slice, shipping_slice, local_slice = mask[:, 0:2], mask[:, 2:5], mask[:, 5:6]
  np.testing.assert_array_equal(price_slice, price_slice[:, :1].repeat(2, axis=1))
  np.testing.assert_array_equal(shipping_slice, shipping_slice[:, :1].repeat(3, axis=1))
  assert local_slice.shape == (3, 1)
  assert not np.allclose(price_slice[:, 0], shipping_slice[:, 0])


def test_element_granularity_has_one_value_per_dimension():
  region_repr, x_driven = _inputs()
  layer = RegionMask(DRIVEN_DIMS, granularity="element")
  layer((region_repr, x_driven))
  _randomize_weights(layer)

  mask = layer.mask_values(region_repr).numpy()

  assert not np.allclose(mask[:, 0], mask[:, 1])


def test_mask_differs_between_regions():
  region_repr, x_driven = _inputs()
  layer = RegionMask(DRIVEN_DIMS)
  layer((region_repr, x_driven))
  _randomize_weights(layer)

  mask = layer.mask_values(region_repr).numpy()

  assert not np.allclose(mask[0], mask[1])


@pytest.mark.parametrize("granularity", ["element", "feature"])
def test_config_round_trip_gives_same_output(granularity):
  region_repr, x_driven = _inputs()
  layer = RegionMask(
    DRIVEN_DIMS, hidden_units=(8, 4), granularity=granularity, gate="sigmoid", name="md"
  )
  layer((region_repr, x_driven))
  _randomize_weights(layer)

  config = layer.get_config()
  restored = RegionMask.from_config(config)
  restored((region_repr, x_driven))
  restored.set_weights(layer.get_weights())

  assert restored.get_config() == config
  assert config["driven_dims"] == DRIVEN_DIMS
  assert config["hidden_units"] == [8, 4]
  assert config["granularity"] == granularity
  assert config["gate"] == "sigmoid"
  np.testing.assert_array_equal(
    restored((region_repr, x_driven)).numpy(), layer((region_repr, x_driven)).numpy()
  )


def test_keras_serialization_finds_registered_class():
  layer = RegionMask(DRIVEN_DIMS, granularity="feature")

  restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))

  assert isinstance(restored, RegionMask)
  assert restored.granularity == "feature"


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"driven_dims": []}, "driven_dims must list at least one width"),
    ({"driven_dims": [2, 0]}, "received (2, 0)"),
    ({"driven_dims": [2], "hidden_units": [-1]}, "hidden_units must be an int > 0"),
    ({"driven_dims": [2], "granularity": "slice"}, "received 'slice'"),
    ({"driven_dims": [2], "gate": "tanh"}, "received 'tanh'"),
  ],
)
def test_invalid_argument_raises(kwargs, message):
  with pytest.raises(ValueError) as error:
    RegionMask(**kwargs)

  assert message in str(error.value)


def test_single_number_for_list_raises_type_error():
  with pytest.raises(TypeError) as error:
    RegionMask(driven_dims=3)

  assert "Write [3] for a single entry" in str(error.value)


def test_driven_width_mismatch_raises():
  region_repr, x_driven = _inputs()
  layer = RegionMask([2, 2])

  with pytest.raises(ValueError) as error:
    layer((region_repr, x_driven))

  assert "sum(driven_dims)=4" in str(error.value)
  assert "(3, 5, 6)" in str(error.value)
