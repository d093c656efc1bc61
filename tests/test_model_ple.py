"""Tests for PLE and its PleExtractionLayer."""

import numpy as np
import pytest
import tensorflow as tf

from body_fixtures import (MASK, TASKS, body_model, experts_reference, gate_reference,
                           item_input, randomize_model, randomize_weights, tiny_config,
                           tower_reference)
from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.ple_extraction import PleExtractionLayer
from seqmd_tf.models import ple


def _model(**overrides):
  model = body_model(ple.build_logits, tiny_config("ple", **overrides))
  randomize_model(model, seed=11)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def _task_loss(logits, task):
  """Return a scalar loss of one task's logits, standing in for its ranking loss."""
  return tf.reduce_sum(tf.square(logits[task] - 1.0))


def _gradients(model, task, variables):
  with tf.GradientTape() as tape:
    loss = _task_loss(model(_inputs()), task)
  return tape.gradient(loss, variables)


def _extraction_reference(layer, inputs):
  """Compute a PleExtractionLayer in numpy from its weights."""
  task_inputs, shared_input = inputs[:-1], inputs[-1]
  task_experts = [experts_reference(group, x)
                  for group, x in zip(layer.task_experts, task_inputs)]
  shared_experts = experts_reference(layer.shared_experts, shared_input)
  outputs = [
      gate_reference(gate, x, np.concatenate([own, shared_experts], axis=2))[0]
      for gate, x, own in zip(layer.task_gates, task_inputs, task_experts)
  ]
  if layer.shared_gate is not None:
    all_experts = np.concatenate(task_experts + [shared_experts], axis=2)
    outputs.append(gate_reference(layer.shared_gate, shared_input, all_experts)[0])
  return outputs


@pytest.mark.parametrize("is_last", [True, False])
def test_extraction_layer_matches_numpy_reference(is_last):
  layer = PleExtractionLayer(num_tasks=2, num_task_experts=2, num_shared_experts=3,
                             expert_units=(4,), is_last=is_last)
  inputs = [item_input(seed) for seed in range(3)]
  layer(inputs)
  randomize_weights(layer, seed=12)

  outputs = layer(inputs)

  expected = _extraction_reference(layer, [x.numpy() for x in inputs])
  assert len(outputs) == (2 if is_last else 3)
  for output, reference in zip(outputs, expected):
    np.testing.assert_allclose(output.numpy(), reference, rtol=1e-5, atol=1e-5)


def test_gates_see_own_and_shared_experts():
  layer = PleExtractionLayer(num_tasks=3, num_task_experts=2, num_shared_experts=1,
                             expert_units=(4,), is_last=False)

  layer([item_input()] * 4)

  assert [gate.num_experts for gate in layer.task_gates] == [3, 3, 3]
  assert layer.shared_gate.num_experts == 3 * 2 + 1


def test_logits_match_numpy_reference():
  model = _model()
  inputs = _inputs()

  logits = model(inputs)

  x = inputs["x"].numpy()
  first = _extraction_reference(model.get_layer("ple_level_0"), [x] * 4)
  second = _extraction_reference(model.get_layer("ple_level_1"), first)
  assert list(logits) == list(TASKS)
  assert len(second) == len(TASKS)
  for step, task in enumerate(TASKS):
    expected = tower_reference(model.get_layer(f"tower_{step}_{task}"), second[step])
    np.testing.assert_allclose(logits[task].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_last_level_experts_skip_other_tasks():
  model = _model()
  click_experts = model.get_layer("ple_level_1").task_experts[0].trainable_variables

  gradients = _gradients(model, "cart", click_experts)

  assert click_experts
  assert all(gradient is None or not np.any(gradient.numpy()) for gradient in gradients)


def test_cgc_experts_skip_other_tasks():
  model = _model(ple_levels=1)
  click_experts = model.get_layer("ple_level_0").task_experts[0].trainable_variables

  gradients = _gradients(model, "cart", click_experts)

  assert all(gradient is None or not np.any(gradient.numpy()) for gradient in gradients)


def test_early_task_experts_reach_others_through_shared_gate():
  # Below the last level, the shared gate mixes every task's experts into the shared output,
  # so a lower-level click expert does receive the cart loss's gradient, as PLE intends.
  model = _model()
  click_experts = model.get_layer("ple_level_0").task_experts[0].trainable_variables

  gradients = _gradients(model, "cart", click_experts)

  assert all(gradient is not None for gradient in gradients)
  assert any(np.any(gradient.numpy()) for gradient in gradients)


def test_own_task_trains_task_experts():
  model = _model()
  click_experts = model.get_layer("ple_level_1").task_experts[0].trainable_variables

  gradients = _gradients(model, "click", click_experts)

  assert any(np.any(gradient.numpy()) for gradient in gradients)


def test_wrong_input_count_raises():
  layer = PleExtractionLayer(num_tasks=2)

  with pytest.raises(ValueError) as error:
    layer([item_input()] * 2)

  assert "num_tasks + 1 = 3 tensors" in str(error.value)
  assert "received 2" in str(error.value)


def test_config_round_trip():
  layer = PleExtractionLayer(num_tasks=3, num_task_experts=2, num_shared_experts=1,
                             expert_units=[4, 2], dropout=0.1, is_last=False, name="level")
  config = layer.get_config()

  restored = PleExtractionLayer.from_config(config)

  assert restored.get_config() == config


def test_ple_without_shared_experts_rejected():
  config = ModelConfig(model="ple", num_shared_experts=0)

  with pytest.raises(ValueError) as error:
    config.validate(num_tasks=2)

  assert "--num_shared_experts must be >= 1 for --model=ple" in str(error.value)
