"""Tests for the single-task baseline: one MLP and tower per task, nothing shared."""

import numpy as np
import tensorflow as tf

from body_fixtures import (MASK, TASKS, body_model, encoder_reference, item_input,
                           randomize_model, randomize_weights, tiny_config, tower_reference)
from seqmd_tf.models import single_task


def _model(**overrides):
  model = body_model(single_task.build_logits, tiny_config("single_task", **overrides))
  randomize_model(model, seed=1)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def test_logits_follow_funnel_order():
  logits = _model()(_inputs())

  assert list(logits) == list(TASKS)
  for task in TASKS:
    assert logits[task].shape == (2, 3)


def test_logits_match_numpy_reference():
  model = _model(list_context=True)
  inputs = _inputs()

  logits = model(inputs)

  for step, task in enumerate(TASKS):
    encoder = model.get_layer(f"encoder_{step}_{task}")
    tower = model.get_layer(f"tower_{step}_{task}")
    hidden = encoder_reference(encoder, inputs["x"].numpy(), MASK)
    np.testing.assert_allclose(logits[task].numpy(), tower_reference(tower, hidden),
                               rtol=1e-5, atol=1e-5)


def test_task_shares_no_variable_with_another():
  model = _model()
  first_task_variables = (model.get_layer("encoder_0_click").trainable_variables
                          + model.get_layer("tower_0_click").trainable_variables)

  with tf.GradientTape() as tape:
    purchase_logits = model(_inputs())["purchase"]
  gradients = tape.gradient(purchase_logits, first_task_variables)

  assert first_task_variables
  assert all(gradient is None for gradient in gradients)


def test_perturbing_one_task_leaves_others():
  model = _model()
  inputs = _inputs()
  before = {task: value.numpy() for task, value in model(inputs).items()}

  randomize_weights(model.get_layer("encoder_1_cart"), seed=1009)
  after = {task: value.numpy() for task, value in model(inputs).items()}

  np.testing.assert_array_equal(after["click"], before["click"])
  np.testing.assert_array_equal(after["purchase"], before["purchase"])
  assert not np.allclose(after["cart"], before["cart"])
