"""Tests for AITM and its AdaptiveInformationTransfer (AIT) layer."""

import math

import numpy as np
import pytest
import tensorflow as tf

from body_fixtures import (MASK, TASKS, body_model, dense_stack, encoder_reference, item_input,
                           randomize_model, randomize_weights, softmax, tiny_config,
                           tower_reference)
from seqmd_tf.layers.ait import AdaptiveInformationTransfer
from seqmd_tf.models import aitm


def _model():
  model = body_model(aitm.build_logits, tiny_config("aitm"))
  randomize_model(model, seed=41)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def _outputs(model, inputs):
  return {task: value.numpy() for task, value in model(inputs).items()}


def _ait_reference(layer, q):
  """Compute the AIT chain in numpy; return (z list, attention weights list)."""
  value, query, key = (dense.get_weights()[0] for dense in layer.attention_layers)
  outputs, all_weights = [q[0]], []
  for step in range(1, len(q)):
    transferred = dense_stack([layer.transfer_layers[step - 1]], outputs[-1])
    candidates = np.stack([q[step], transferred], axis=2)
    weights = softmax(((candidates @ query) * (candidates @ key)).sum(axis=-1)
                      / math.sqrt(layer.units))
    outputs.append(np.einsum("blu,bluk->blk", weights, candidates @ value))
    all_weights.append(weights)
  return outputs, all_weights


def _built_layer(units=3):
  layer = AdaptiveInformationTransfer(num_tasks=3, units=units)
  q = [item_input(seed, width=4) for seed in range(3)]
  layer(q)
  randomize_weights(layer, seed=42)
  return layer, q


def test_ait_matches_numpy_reference():
  layer, q = _built_layer()

  z, weights = layer(q, return_weights=True)

  expected_z, expected_weights = _ait_reference(layer, [t.numpy() for t in q])
  assert [t.shape for t in z] == [(2, 3, 4), (2, 3, 3), (2, 3, 3)]
  for actual, expected in zip(weights, expected_weights):
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5)
  for actual, expected in zip(z, expected_z):
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_one_attention_shared_by_steps():
  layer, _ = _built_layer()

  # Two transfer layers (click -> cart, cart -> purchase), one set of h_1, h_2, h_3.
  assert len(layer.transfer_layers) == 2
  assert layer.transfer_layers[0].kernel.shape == (4, 4)
  assert layer.transfer_layers[1].kernel.shape == (3, 4)
  assert len(layer.attention_layers) == 3
  assert len(layer.trainable_variables) == 2 * 2 + 3


def test_attention_weights_sum_to_one():
  layer, q = _built_layer()

  _, weights = layer(q, return_weights=True)

  assert len(weights) == 2
  for step_weights in weights:
    assert step_weights.shape == (2, 3, 2)
    np.testing.assert_allclose(step_weights.numpy().sum(axis=-1), 1.0, rtol=1e-6)


def test_logits_match_numpy_reference():
  model = _model()
  inputs = _inputs()

  logits = model(inputs)

  x = inputs["x"].numpy()
  q = [encoder_reference(model.get_layer(f"aitm_encoder_{step}_{task}"), x, MASK)
       for step, task in enumerate(TASKS)]
  z, _ = _ait_reference(model.get_layer("ait"), q)
  assert list(logits) == list(TASKS)
  for step, task in enumerate(TASKS):
    expected = tower_reference(model.get_layer(f"tower_{step}_{task}"), z[step])
    np.testing.assert_allclose(logits[task].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_last_tower_leaves_earlier_tasks():
  model = _model()
  inputs = _inputs()
  before = _outputs(model, inputs)

  randomize_weights(model.get_layer("tower_2_purchase"), seed=1003)
  after = _outputs(model, inputs)

  np.testing.assert_array_equal(after["click"], before["click"])
  np.testing.assert_array_equal(after["cart"], before["cart"])
  assert not np.allclose(after["purchase"], before["purchase"])


def test_second_task_leaves_first():
  model = _model()
  inputs = _inputs()
  before = _outputs(model, inputs)

  randomize_weights(model.get_layer("aitm_encoder_1_cart"), seed=1004)
  after = _outputs(model, inputs)

  np.testing.assert_array_equal(after["click"], before["click"])
  assert not np.allclose(after["cart"], before["cart"])
  assert not np.allclose(after["purchase"], before["purchase"])


def test_transfer_goes_only_to_next_task():
  model = _model()
  inputs = _inputs()
  before = _outputs(model, inputs)
  transfers = model.get_layer("ait").transfer_layers

  randomize_weights(transfers[1], seed=1005)
  after_second = _outputs(model, inputs)
  randomize_weights(transfers[0], seed=1006)
  after_first = _outputs(model, inputs)

  # cart -> purchase changes purchase only.
  np.testing.assert_array_equal(after_second["click"], before["click"])
  np.testing.assert_array_equal(after_second["cart"], before["cart"])
  assert not np.allclose(after_second["purchase"], before["purchase"])
  # click -> cart changes cart and, through z_cart, purchase.
  np.testing.assert_array_equal(after_first["click"], after_second["click"])
  assert not np.allclose(after_first["cart"], after_second["cart"])
  assert not np.allclose(after_first["purchase"], after_second["purchase"])


def test_first_task_transfers_forward():
  model = _model()
  inputs = _inputs()
  before = _outputs(model, inputs)

  randomize_weights(model.get_layer("aitm_encoder_0_click"), seed=1007)
  after = _outputs(model, inputs)

  assert not np.allclose(after["cart"], before["cart"])
  assert not np.allclose(after["purchase"], before["purchase"])


def test_transfer_skips_previous_task_tower():
  # The transferred information is the previous task's representation z_{t-1}, not its logit.
  model = _model()
  inputs = _inputs()
  before = _outputs(model, inputs)

  randomize_weights(model.get_layer("tower_0_click"), seed=1008)
  after = _outputs(model, inputs)

  assert not np.allclose(after["click"], before["click"])
  np.testing.assert_array_equal(after["cart"], before["cart"])
  np.testing.assert_array_equal(after["purchase"], before["purchase"])


def test_first_task_gets_no_later_gradient():
  model = _model()
  later_variables = (model.get_layer("aitm_encoder_1_cart").trainable_variables
                     + model.get_layer("ait").trainable_variables)

  with tf.GradientTape() as tape:
    click_logits = model(_inputs())["click"]
  gradients = tape.gradient(click_logits, later_variables)

  assert all(gradient is None for gradient in gradients)


def test_config_round_trip():
  layer = AdaptiveInformationTransfer(num_tasks=3, units=5, dropout=0.1, name="ait")
  config = layer.get_config()

  restored = AdaptiveInformationTransfer.from_config(config)

  assert restored.get_config() == config
  assert config["units"] == 5


@pytest.mark.parametrize("make, message", [
    (lambda: AdaptiveInformationTransfer(num_tasks=2, units=0),
     "AdaptiveInformationTransfer: units must be an int >= 1, received 0"),
    (lambda: AdaptiveInformationTransfer(num_tasks=0), "num_tasks must be an int >= 1"),
])
def test_invalid_argument_raises(make, message):
  with pytest.raises(ValueError) as error:
    make()

  assert message in str(error.value)


def test_q_widths_must_match():
  layer = AdaptiveInformationTransfer(num_tasks=2)

  with pytest.raises(ValueError) as error:
    layer([item_input(width=4), item_input(width=5)])

  assert "one known d for all tasks" in str(error.value)
