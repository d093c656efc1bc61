"""Tests for ESMM and its ProbabilityChain."""

import math

import numpy as np
import tensorflow as tf

from body_fixtures import (MASK, TASKS, body_model, encoder_reference, item_input,
                           randomize_model, sigmoid, tiny_config, tower_reference)
from seqmd_tf.layers.probability_chain import PROBABILITY_EPSILON, ProbabilityChain
from seqmd_tf.models import esmm


def _model():
  model = body_model(esmm.build_logits, tiny_config("esmm"))
  randomize_model(model, seed=31)
  return model


def _inputs():
  return {"x": item_input(), "mask": tf.constant(MASK)}


def test_chain_on_hand_values():
  # p_1 = sigmoid(0) = 0.5; p(2 | 1) = sigmoid(log 3) = 0.75, so p_2 = 0.375 and
  # logit_2 = log(0.375 / 0.625) = log(0.6); p(3 | 2) = 0.5, so p_3 = 0.1875.
  logits = [tf.constant([[0.0]]), tf.constant([[math.log(3.0)]]), tf.constant([[0.0]])]

  chained = ProbabilityChain()(logits)

  np.testing.assert_allclose(chained[0].numpy(), [[0.0]])
  np.testing.assert_allclose(chained[1].numpy(), [[math.log(0.6)]], rtol=1e-6)
  np.testing.assert_allclose(chained[2].numpy(), [[math.log(0.1875 / 0.8125)]], rtol=1e-6)


def test_last_probability_is_previous_times_conditional():
  model = _model()
  inputs = _inputs()

  logits = model(inputs)

  z = encoder_reference(model.get_layer("shared_encoder"), inputs["x"].numpy(), MASK)
  click_logits = tower_reference(model.get_layer("tower_0_click"), z)
  for step in (1, 2):
    conditional = tower_reference(
        model.get_layer(f"conditional_tower_{step}_{TASKS[step]}"), z)
    np.testing.assert_allclose(
        sigmoid(logits[TASKS[step]].numpy()),
        sigmoid(logits[TASKS[step - 1]].numpy()) * sigmoid(conditional), rtol=1e-5)
  np.testing.assert_allclose(logits["click"].numpy(), click_logits, rtol=1e-5, atol=1e-6)


def test_probabilities_never_rise_along_funnel():
  model = _model()

  probs = [tf.sigmoid(logits).numpy() for logits in model(_inputs()).values()]

  assert np.all(probs[1] <= probs[0])
  assert np.all(probs[2] <= probs[1])


def test_probability_near_one_gives_finite_logit():
  logits = [tf.constant([[40.0]]), tf.constant([[40.0]])]

  chained = ProbabilityChain()(logits)

  bound = math.log((1.0 - PROBABILITY_EPSILON) / PROBABILITY_EPSILON)
  assert np.isfinite(chained[1].numpy()).all()
  np.testing.assert_allclose(chained[1].numpy(), [[bound]], rtol=1e-3)


def test_tiny_probability_keeps_its_logit():
  # log p = log_sigmoid(-60) + log_sigmoid(-60) is about -120; no lower bound applies.
  logits = [tf.constant([[-60.0]]), tf.constant([[-60.0]])]

  chained = ProbabilityChain()(logits)

  np.testing.assert_allclose(chained[1].numpy(), [[-120.0]], rtol=1e-4)


def test_gradient_finite_at_extremes():
  logits = tf.Variable([[40.0, -60.0, 0.0, 15.0]])
  conditional = tf.Variable([[40.0, -60.0, 0.0, 15.0]])

  with tf.GradientTape() as tape:
    chained = ProbabilityChain()([logits, conditional])
    loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.ones_like(chained[1]), logits=chained[1]))
  gradients = tape.gradient(loss, [logits, conditional])

  for gradient in gradients:
    assert np.isfinite(gradient.numpy()).all()


def test_single_task_is_unchanged():
  logits = [tf.constant([[1.5, -2.0]])]

  chained = ProbabilityChain()(logits)

  assert len(chained) == 1
  np.testing.assert_array_equal(chained[0].numpy(), logits[0].numpy())


def test_config_round_trip():
  layer = ProbabilityChain(name="chain")
  config = layer.get_config()

  restored = ProbabilityChain.from_config(config)

  assert restored.get_config() == config
