"""Tests for the SeqTaskChain layer, and a save/load round trip of all SEQ+MD layers."""

import os

import numpy as np
import pytest
import tensorflow as tf

from seqmd_tf.layers import RegionMask, SeqTaskChain, SharedEncoder

TASKS = ["click", "cart", "purchase"]
BATCH_SIZE = 2
LIST_SIZE = 3
ENCODING_WIDTH = 5
UNITS = 4


def _encoding(seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(BATCH_SIZE, LIST_SIZE, ENCODING_WIDTH)).astype(np.float32))


def _randomize_weights(layer, seed):
  rng = np.random.default_rng(seed)
  layer.set_weights(
    [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in layer.get_weights()]
  )


def _built_chain(**kwargs):
  chain = SeqTaskChain(TASKS, units=UNITS, tower_units=(3,), **kwargs)
  chain(_encoding())
  _randomize_weights(chain, seed=1)
  return chain


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_gru_step(cell, inputs, state):
  """Compute one Keras GRUCell step (reset_after=True) in numpy from the cell's weights."""
  kernel, recurrent_kernel, bias = cell.get_weights()
  input_bias, recurrent_bias = bias
  x_update, x_reset, x_candidate = np.split(inputs @ kernel + input_bias, 3, axis=-1)
  h_update, h_reset, h_candidate = np.split(state @ recurrent_kernel + recurrent_bias, 3, axis=-1)

  update = _sigmoid(x_update + h_update)
  reset = _sigmoid(x_reset + h_reset)
  candidate = np.tanh(x_candidate + reset * h_candidate)
  return update * state + (1.0 - update) * candidate


def _reference_tower(tower, state):
  activations = state
  for layer in tower.layers[:-1]:
    kernel, bias = layer.get_weights()
    activations = np.maximum(activations @ kernel + bias, 0.0)
  kernel, bias = tower.layers[-1].get_weights()
  return (activations @ kernel + bias)[:, 0]


def test_logits_keys_follow_funnel_order():
  chain = _built_chain()

  logits = chain(_encoding())

  assert list(logits) == TASKS
  for task in TASKS:
    assert logits[task].shape == (BATCH_SIZE, LIST_SIZE)


@pytest.mark.parametrize("initial_state", ["zeros", "dense"])
@pytest.mark.parametrize("task_embedding", [False, True])
def test_unroll_matches_numpy_reference(initial_state, task_embedding):
  z = _encoding()
  chain = _built_chain(initial_state=initial_state, task_embedding=task_embedding)

  logits, states = chain(z, return_states=True)

  items = z.numpy().reshape(-1, ENCODING_WIDTH)
  if initial_state == "zeros":
    state = np.zeros((items.shape[0], UNITS), np.float32)
  else:
    kernel, bias = chain.initial_state_layer.get_weights()
    state = items @ kernel + bias
  np.testing.assert_allclose(states[0].numpy().reshape(-1, UNITS), state, rtol=1e-5, atol=1e-6)

  embeddings = chain.task_embeddings.numpy() if task_embedding else np.zeros((3, ENCODING_WIDTH))
  for step, task in enumerate(TASKS):
    state = _reference_gru_step(chain.gru_cell, items + embeddings[step], state)
    expected_logits = _reference_tower(chain.towers[step], state)

    np.testing.assert_allclose(
      states[step + 1].numpy().reshape(-1, UNITS), state, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
      logits[task].numpy().reshape(-1), expected_logits, rtol=1e-5, atol=1e-5
    )


def test_zero_initial_state_is_zero():
  chain = _built_chain()

  _, states = chain(_encoding(), return_states=True)

  assert len(states) == len(TASKS) + 1
  np.testing.assert_array_equal(states[0].numpy(), 0.0)


def test_step_two_starts_from_step_one():
  z = _encoding()
  chain = _built_chain()

  _, states = chain(z, return_states=True)

  items = tf.reshape(z, [-1, ENCODING_WIDTH])
  step_one_output, _ = chain.gru_cell(items, [tf.reshape(states[0], [-1, UNITS])])
  step_two_output, _ = chain.gru_cell(items, [tf.reshape(states[1], [-1, UNITS])])
  np.testing.assert_allclose(states[1].numpy().reshape(-1, UNITS), step_one_output.numpy())
  np.testing.assert_allclose(states[2].numpy().reshape(-1, UNITS), step_two_output.numpy())


def test_later_tower_does_not_change_earlier_tasks():
  z = _encoding()
  chain = _built_chain()
  before = {task: value.numpy() for task, value in chain(z).items()}

  _randomize_weights(chain.towers[1], seed=7)
  after = {task: value.numpy() for task, value in chain(z).items()}

  np.testing.assert_array_equal(after["click"], before["click"])
  np.testing.assert_array_equal(after["purchase"], before["purchase"])
  assert not np.allclose(after["cart"], before["cart"])


def test_first_tower_does_not_change_later_tasks():
  z = _encoding()
  chain = _built_chain()
  before = {task: value.numpy() for task, value in chain(z).items()}

  _randomize_weights(chain.towers[0], seed=7)
  after = {task: value.numpy() for task, value in chain(z).items()}

  assert not np.allclose(after["click"], before["click"])
  np.testing.assert_array_equal(after["cart"], before["cart"])
  np.testing.assert_array_equal(after["purchase"], before["purchase"])


def test_first_task_gradient_skips_later_towers():
  z = _encoding()
  chain = _built_chain()

  with tf.GradientTape() as tape:
    click_logits = chain(z)["click"]
  later_tower_weights = chain.towers[1].weights + chain.towers[2].weights
  gradients = tape.gradient(click_logits, later_tower_weights)

  assert all(gradient is None for gradient in gradients)


def test_task_embedding_changes_step_inputs():
  z = _encoding()
  chain = _built_chain(task_embedding=True)
  before = chain(z)["cart"].numpy()

  chain.task_embeddings.assign(chain.task_embeddings + 1.0)
  after = chain(z)["cart"].numpy()

  assert chain.task_embeddings.shape == (len(TASKS), ENCODING_WIDTH)
  assert not np.allclose(after, before)


@pytest.mark.parametrize("initial_state", ["zeros", "dense"])
@pytest.mark.parametrize("task_embedding", [False, True])
def test_config_round_trip_gives_same_output(initial_state, task_embedding):
  z = _encoding()
  chain = _built_chain(initial_state=initial_state, task_embedding=task_embedding)

  config = chain.get_config()
  restored = SeqTaskChain.from_config(config)
  restored(z)
  restored.set_weights(chain.get_weights())

  assert restored.get_config() == config
  assert config["task_names"] == TASKS
  assert config["units"] == UNITS
  assert config["tower_units"] == [3]
  assert config["initial_state"] == initial_state
  assert config["task_embedding"] is task_embedding
  for task in TASKS:
    np.testing.assert_array_equal(restored(z)[task].numpy(), chain(z)[task].numpy())


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"task_names": []}, "task_names must be a non-empty list"),
    ({"task_names": ["click", "click"]}, "task names must be unique"),
    ({"task_names": ["click", ""]}, "every task name must be a non-empty string"),
    ({"task_names": TASKS, "units": 0}, "units must be an int > 0, received 0"),
    ({"task_names": TASKS, "initial_state": "ones"}, "received 'ones'"),
  ],
)
def test_invalid_argument_raises(kwargs, message):
  with pytest.raises(ValueError) as error:
    SeqTaskChain(**kwargs)

  assert message in str(error.value)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"task_names": "click"}, "Write ['click'] for a single task"),
    ({"task_names": TASKS, "tower_units": 16}, "Write [16] for a single hidden layer"),
  ],
)
def test_single_value_for_list_raises_type_error(kwargs, message):
  with pytest.raises(TypeError) as error:
    SeqTaskChain(**kwargs)

  assert message in str(error.value)


def _tiny_model():
  """Build region mask -> shared encoder -> task chain as a functional Keras model."""
  region_repr = tf.keras.Input(shape=(3,), name="region_repr")
  x_driven = tf.keras.Input(shape=(LIST_SIZE, 4), name="x_driven")
  x_invariant = tf.keras.Input(shape=(LIST_SIZE, 2), name="x_invariant")
  mask = tf.keras.Input(shape=(LIST_SIZE,), dtype=tf.bool, name="mask")

  masked = RegionMask([1, 3], granularity="feature", name="region_mask")((region_repr, x_driven))
  x = tf.keras.layers.Concatenate(axis=-1)([x_invariant, masked])
  z = SharedEncoder(hidden_units=(8,), list_context=True, name="shared_encoder")(x, mask=mask)
  logits = SeqTaskChain(TASKS, units=UNITS, task_embedding=True, name="seq_task_chain")(z)
  return tf.keras.Model(
    inputs={
      "region_repr": region_repr,
      "x_driven": x_driven,
      "x_invariant": x_invariant,
      "mask": mask,
    },
    outputs=logits,
  )


def _tiny_model_inputs():
  rng = np.random.default_rng(3)
  return {
    "region_repr": rng.normal(size=(BATCH_SIZE, 3)).astype(np.float32),
    "x_driven": rng.normal(size=(BATCH_SIZE, LIST_SIZE, 4)).astype(np.float32),
    "x_invariant": rng.normal(size=(BATCH_SIZE, LIST_SIZE, 2)).astype(np.float32),
    "mask": np.array([[True, True, False], [True, False, False]]),
  }


@pytest.mark.parametrize("file_name", ["saved_model", "model.keras"])
def test_model_save_and_load_without_custom_objects(tmp_path, file_name):
  model = _tiny_model()
  for layer in model.layers:
    if layer.weights:
      _randomize_weights(layer, seed=5)
  inputs = _tiny_model_inputs()
  expected = model(inputs)
  path = os.path.join(tmp_path, file_name)

  model.save(path)
  loaded = tf.keras.models.load_model(path)
  outputs = loaded(inputs)

  assert isinstance(loaded.get_layer("region_mask"), RegionMask)
  assert isinstance(loaded.get_layer("shared_encoder"), SharedEncoder)
  assert isinstance(loaded.get_layer("seq_task_chain"), SeqTaskChain)
  for task in TASKS:
    np.testing.assert_allclose(outputs[task].numpy(), expected[task].numpy(), rtol=1e-6)
  np.testing.assert_allclose(
    loaded.get_layer("region_mask").mask_values(inputs["region_repr"]).numpy(),
    model.get_layer("region_mask").mask_values(inputs["region_repr"]).numpy(),
    rtol=1e-6,
  )
