"""Tests for MMoE and its layers: ExpertGroup, ExpertGate and TaskTower."""

import math

import numpy as np
import pytest
import tensorflow as tf

from body_fixtures import (MASK, TASKS, WIDTH, body_model, experts_reference, gate_reference,
                           item_input, randomize_model, randomize_weights, tiny_config,
                           tower_reference)
from seqmd_tf.layers.expert_gate import ExpertGate
from seqmd_tf.layers.expert_group import ExpertGroup
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models import mmoe


def _model(**overrides):
  model = body_model(mmoe.build_logits, tiny_config("mmoe", **overrides))
  randomize_model(model, seed=3)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def test_expert_group_matches_numpy_reference():
  group = ExpertGroup(num_experts=3, units=(4, 2))
  x = item_input()
  group(x)
  randomize_weights(group, seed=4)

  experts = group(x)

  assert experts.shape == (2, 3, 3, 2)
  np.testing.assert_allclose(experts.numpy(), experts_reference(group, x.numpy()),
                             rtol=1e-5, atol=1e-6)


def test_expert_group_starts_glorot_per_expert():
  group = ExpertGroup(num_experts=8, units=(50,))
  group(item_input(width=30))
  kernel = group.kernels[0].numpy()

  # Glorot uniform over one expert's [30, 50] kernel draws from [-limit, limit].
  limit = math.sqrt(6.0 / (30 + 50))
  assert kernel.shape == (8, 30, 50)
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.9 * limit


def test_experts_have_separate_weights():
  group = ExpertGroup(num_experts=2, units=(4,))
  x = item_input()

  with tf.GradientTape() as tape:
    first_expert_sum = tf.reduce_sum(group(x)[:, :, 0, :])
  kernel_gradient = tape.gradient(first_expert_sum, group.kernels[0]).numpy()

  assert np.any(kernel_gradient[0] != 0.0)
  np.testing.assert_array_equal(kernel_gradient[1], 0.0)


def test_expert_dropout_only_in_training():
  group = ExpertGroup(num_experts=2, units=(16,), dropout=0.5)
  x = item_input()

  inference = group(x, training=False).numpy()
  training = group(x, training=True).numpy()

  np.testing.assert_array_equal(group(x, training=False).numpy(), inference)
  assert np.any((training == 0.0) & (inference != 0.0))


def test_gate_weights_sum_to_one():
  model = _model()
  x = item_input()

  for step, task in enumerate(TASKS):
    weights = model.get_layer(f"mmoe_gate_{step}_{task}").gate_weights(x).numpy()
    assert weights.shape == (2, 3, 3)
    assert np.all(weights > 0.0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-6)


def test_gate_matches_numpy_reference():
  gate = ExpertGate(num_experts=3)
  x = item_input()
  experts = tf.constant(np.random.default_rng(5).normal(size=(2, 3, 3, 4)).astype(np.float32))
  gate((x, experts))
  randomize_weights(gate, seed=6)

  mixed, weights = gate((x, experts), return_weights=True)

  expected_mixed, expected_weights = gate_reference(gate, x.numpy(), experts.numpy())
  np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5)
  np.testing.assert_allclose(mixed.numpy(), expected_mixed, rtol=1e-5, atol=1e-6)


def test_logits_match_numpy_reference():
  model = _model()
  inputs = _inputs()

  logits = model(inputs)

  x = inputs["x"].numpy()
  experts = experts_reference(model.get_layer("mmoe_experts"), x)
  assert list(logits) == list(TASKS)
  for step, task in enumerate(TASKS):
    mixed, _ = gate_reference(model.get_layer(f"mmoe_gate_{step}_{task}"), x, experts)
    expected = tower_reference(model.get_layer(f"tower_{step}_{task}"), mixed)
    np.testing.assert_allclose(logits[task].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_experts_shared_and_gates_per_task():
  model = _model()
  experts = model.get_layer("mmoe_experts").trainable_variables
  click_gate = model.get_layer("mmoe_gate_0_click").trainable_variables

  with tf.GradientTape() as tape:
    purchase_logits = model(_inputs())["purchase"]
  expert_gradients, gate_gradients = tape.gradient(purchase_logits, [experts, click_gate])

  assert all(gradient is not None for gradient in expert_gradients)
  assert all(gradient is None for gradient in gate_gradients)


def test_list_context_doubles_expert_input():
  model = _model(list_context=True)

  kernel = model.get_layer("mmoe_experts").kernels[0]

  assert kernel.shape == (3, 2 * WIDTH, 4)


@pytest.mark.parametrize("layer", [
    ExpertGroup(num_experts=2, units=[3, 2], dropout=0.25, name="experts"),
    ExpertGate(num_experts=4, name="gate"),
    TaskTower(hidden_units=[5], name="tower"),
])
def test_config_round_trip(layer):
  config = layer.get_config()

  restored = type(layer).from_config(config)

  assert restored.get_config() == config


def test_tower_matches_numpy_reference():
  tower = TaskTower(hidden_units=(3, 2))
  h = item_input()
  tower(h)
  randomize_weights(tower, seed=7)

  logits = tower(h)

  assert logits.shape == (2, 3)
  np.testing.assert_allclose(logits.numpy(), tower_reference(tower, h.numpy()), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: ExpertGroup(num_experts=0),
     "ExpertGroup: num_experts must be an int >= 1, received 0"),
    (lambda: ExpertGroup(num_experts=2, units=8), "Write [8] for a single layer"),
    (lambda: ExpertGroup(num_experts=2, units=()), "units must list at least one width"),
    (lambda: ExpertGroup(num_experts=2, dropout=1.0), "dropout must be in [0, 1), received 1.0"),
    (lambda: ExpertGate(num_experts=True), "ExpertGate: num_experts must be an int >= 1"),
    (lambda: TaskTower(hidden_units=[4, 0]), "every entry of hidden_units must be an int > 0"),
])
def test_invalid_argument_raises(make, message):
  with pytest.raises(ValueError) as error:
    make()

  assert message in str(error.value)


def test_gate_rejects_wrong_expert_count():
  gate = ExpertGate(num_experts=3)

  with pytest.raises(ValueError) as error:
    gate((item_input(), tf.zeros([2, 3, 2, 4])))

  assert "num_experts=3" in str(error.value)
