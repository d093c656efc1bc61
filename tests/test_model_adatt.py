"""Tests for AdaTT and its AdaTTFusionLevel."""

import math

import numpy as np
import pytest
import tensorflow as tf

from body_fixtures import (MASK, TASKS, body_model, experts_reference, gate_reference,
                           item_input, randomize_model, randomize_weights, tiny_config,
                           tower_reference)
from seqmd_tf.layers.adatt_fusion import AdaTTFusionLevel
from seqmd_tf.models import adatt


def _model(**overrides):
  model = body_model(adatt.build_logits, tiny_config("adatt", **overrides))
  randomize_model(model, seed=21)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def _fusion_reference(layer, inputs):
  """Compute an AdaTTFusionLevel in numpy: softmax fusion of all experts plus native residual."""
  module_experts = [experts_reference(group, x) for group, x in zip(layer.experts, inputs)]
  all_experts = np.concatenate(module_experts, axis=2)
  outputs = []
  for module, gate in enumerate(layer.gates):
    fused, _ = gate_reference(gate, inputs[module], all_experts)
    native_weights = layer.native_weights[module]
    if native_weights is None:
      residual = module_experts[module][:, :, 0, :]
    else:
      residual = np.einsum("n,blnh->blh", native_weights.numpy(), module_experts[module])
    outputs.append(fused + residual)
  return outputs


@pytest.mark.parametrize("num_task_experts, num_shared_experts, is_last", [
    (2, 1, False),
    (2, 1, True),
    (1, 2, False),
    (1, 0, True),
])
def test_fusion_level_matches_numpy_reference(num_task_experts, num_shared_experts, is_last):
  layer = AdaTTFusionLevel(num_tasks=2, num_task_experts=num_task_experts,
                           num_shared_experts=num_shared_experts, expert_units=(4,),
                           is_last=is_last)
  inputs = [item_input(seed) for seed in range(2 + (1 if num_shared_experts else 0))]
  layer(inputs)
  randomize_weights(layer, seed=22)

  outputs = layer(inputs)

  expected = _fusion_reference(layer, [x.numpy() for x in inputs])
  has_shared_output = num_shared_experts > 0 and not is_last
  assert len(outputs) == 2 + (1 if has_shared_output else 0)
  for output, reference in zip(outputs, expected):
    np.testing.assert_allclose(output.numpy(), reference, rtol=1e-5, atol=1e-5)


def test_fusion_weights_are_softmax_over_all_experts():
  model = _model()
  level = model.get_layer("adatt_level_0")
  x = item_input()

  weights = level.fusion_weights([x] * 4)

  # Three tasks with two experts each, plus one shared expert.
  assert level.total_experts == 3 * 2 + 1
  assert len(weights) == len(TASKS) + 1
  for task_weights in weights:
    assert task_weights.shape == (2, 3, 7)
    assert np.all(task_weights.numpy() > 0.0)
    np.testing.assert_allclose(task_weights.numpy().sum(axis=-1), 1.0, rtol=1e-6)


def test_last_level_has_no_shared_gate():
  model = _model()

  level = model.get_layer("adatt_level_1")

  assert len(level.gates) == len(TASKS)
  assert len(level.experts) == len(TASKS) + 1


def test_native_weights_learned_only_for_several_experts():
  layer = AdaTTFusionLevel(num_tasks=2, num_task_experts=4, num_shared_experts=1,
                           expert_units=(3,), is_last=False)
  layer([item_input()] * 3)

  task_weights, _, shared_weights = layer.native_weights

  # The authors' code draws the native weights uniform in [-sqrt(1/m), sqrt(1/m)].
  assert task_weights.shape == (4,)
  assert np.abs(task_weights.numpy()).max() <= math.sqrt(1.0 / 4)
  assert shared_weights is None


def test_logits_match_numpy_reference():
  model = _model()
  inputs = _inputs()

  logits = model(inputs)

  x = inputs["x"].numpy()
  first = _fusion_reference(model.get_layer("adatt_level_0"), [x] * 4)
  second = _fusion_reference(model.get_layer("adatt_level_1"), first)
  assert list(logits) == list(TASKS)
  for step, task in enumerate(TASKS):
    expected = tower_reference(model.get_layer(f"tower_{step}_{task}"), second[step])
    np.testing.assert_allclose(logits[task].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_task_fuses_other_tasks_experts():
  model = _model(adatt_levels=1)
  click_experts = model.get_layer("adatt_level_0").experts[0].trainable_variables

  with tf.GradientTape() as tape:
    cart_logits = model(_inputs())["cart"]
  gradients = tape.gradient(cart_logits, click_experts)

  assert all(gradient is not None for gradient in gradients)
  assert any(np.any(gradient.numpy()) for gradient in gradients)


def test_adatt_sp_has_no_shared_module():
  model = _model(num_shared_experts=0)

  level = model.get_layer("adatt_level_0")
  logits = model(_inputs())

  assert len(level.experts) == len(TASKS)
  assert level.total_experts == 3 * 2
  assert list(logits) == list(TASKS)


def test_wrong_input_count_raises():
  layer = AdaTTFusionLevel(num_tasks=2, num_shared_experts=1)

  with pytest.raises(ValueError) as error:
    layer([item_input()] * 2)

  assert "inputs must be a list of 3 tensors" in str(error.value)


def test_config_round_trip():
  layer = AdaTTFusionLevel(num_tasks=3, num_task_experts=2, num_shared_experts=0,
                           expert_units=[4], dropout=0.2, is_last=False, name="fusion")
  config = layer.get_config()

  restored = AdaTTFusionLevel.from_config(config)

  assert restored.get_config() == config
