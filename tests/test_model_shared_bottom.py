"""Tests for the shared-bottom baseline: one shared MLP, one tower per task."""

import numpy as np
import tensorflow as tf

from body_fixtures import (MASK, TASKS, body_model, encoder_reference, item_input,
                           randomize_model, tiny_config, tower_reference)
from seqmd_tf.models import shared_bottom


def _model(**overrides):
  model = body_model(shared_bottom.build_logits, tiny_config("shared_bottom", **overrides))
  randomize_model(model, seed=2)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def test_logits_match_numpy_reference():
  model = _model(list_context=True)
  inputs = _inputs()

  logits = model(inputs)

  hidden = encoder_reference(model.get_layer("shared_encoder"), inputs["x"].numpy(), MASK)
  assert list(logits) == list(TASKS)
  for step, task in enumerate(TASKS):
    expected = tower_reference(model.get_layer(f"tower_{step}_{task}"), hidden)
    np.testing.assert_allclose(logits[task].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_every_task_trains_shared_bottom():
  model = _model()
  shared_variables = model.get_layer("shared_encoder").trainable_variables

  for task in TASKS:
    with tf.GradientTape() as tape:
      task_logits = model(_inputs())[task]
    gradients = tape.gradient(task_logits, shared_variables)
    assert all(gradient is not None for gradient in gradients), task
    assert any(np.any(gradient.numpy() != 0.0) for gradient in gradients), task


def test_tower_gets_only_own_task_gradient():
  model = _model()
  click_tower = model.get_layer("tower_0_click").trainable_variables

  with tf.GradientTape() as tape:
    purchase_logits = model(_inputs())["purchase"]
  gradients = tape.gradient(purchase_logits, click_tower)

  assert all(gradient is None for gradient in gradients)
