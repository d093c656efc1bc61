"""Small inputs and helpers for testing one model body or layer on hand-made tensors."""

import dataclasses

import numpy as np
import tensorflow as tf

from seqmd_tf.config import ModelConfig

TASKS = ("click", "cart", "purchase")
BATCH_SIZE = 2
LIST_SIZE = 3
WIDTH = 5
# The second list has one padded item, so the list context's masked mean is exercised.
MASK = np.array([[True, True, True], [True, True, False]])


def item_input(seed=0, width=WIDTH):
  """Return float32 x `[BATCH_SIZE, LIST_SIZE, width]` drawn from a standard normal."""
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(BATCH_SIZE, LIST_SIZE, width)).astype(np.float32))


def tiny_config(model, **overrides):
  """Return a ModelConfig with small widths and no dropout, so numpy references are exact."""
  values = dict(model=model, region_mask="off", shared_units=(6,), tower_units=(4,),
                dropout=0.0, list_context=False, num_experts=3, expert_units=(4,),
                num_task_experts=2, num_shared_experts=1, ple_levels=2, adatt_levels=2,
                aitm_units=4)
  values.update(overrides)
  return dataclasses.replace(ModelConfig(), **values)


def body_model(build_logits, config, tasks=TASKS, width=WIDTH):
  """Wrap a body `build_logits(x, mask, tasks, config)` as a functional Keras model.

  The model takes {"x": [batch_size, list_size, width], "mask": [batch_size, list_size]} and
  returns {task: logits [batch_size, list_size]}.
  """
  x = tf.keras.Input(shape=(None, width), name="x")
  mask = tf.keras.Input(shape=(None,), dtype=tf.bool, name="mask")
  logits = build_logits(x, mask, list(tasks), config)
  return tf.keras.Model(inputs={"x": x, "mask": mask}, outputs=logits)


def randomize_weights(layer, seed, scale=0.5):
  """Replace every weight of `layer` with normal noise, so no weight is trivially 0 or 1."""
  rng = np.random.default_rng(seed)
  layer.set_weights(
    [rng.normal(scale=scale, size=w.shape).astype(np.float32) for w in layer.get_weights()]
  )


def relu(x):
  return np.maximum(x, 0.0)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
  shifted = np.exp(x - x.max(axis=axis, keepdims=True))
  return shifted / shifted.sum(axis=axis, keepdims=True)


def dense_stack(layers, x, final_activation=True):
  """Apply Keras Dense layers to numpy x in numpy: ReLU after each, the last one optional."""
  for i, layer in enumerate(layers):
    kernel, *bias = layer.get_weights()
    x = x @ kernel + (bias[0] if bias else 0.0)
    if final_activation or i < len(layers) - 1:
      x = relu(x)
  return x


def tower_reference(tower, h):
  """Compute a TaskTower in numpy: `[..., H]` -> logits `[...]`."""
  return dense_stack(tower.dense_layers, h, final_activation=False)[..., 0]


def encoder_reference(encoder, x, mask):
  """Compute a SharedEncoder (ReLU Dense stack, optional list context) in numpy."""
  if encoder.list_context:
    valid = mask[:, :, None].astype(np.float32)
    mean = (x * valid).sum(axis=1, keepdims=True) / np.maximum(valid.sum(axis=1, keepdims=True), 1)
    x = np.concatenate([x, x - mean], axis=-1)
  return dense_stack(encoder._dense_layers, x)  # pylint: disable=protected-access


def experts_reference(group, x):
  """Compute an ExpertGroup in numpy: x `[..., D]` -> `[..., num_experts, H]`."""
  outputs = []
  for n in range(group.num_experts):
    hidden = x
    for kernel, bias in zip(group.kernels, group.biases):
      hidden = relu(hidden @ kernel.numpy()[n] + bias.numpy()[n])
    outputs.append(hidden)
  return np.stack(outputs, axis=-2)


def gate_reference(gate, gate_input, experts):
  """Compute an ExpertGate in numpy; return (mixture `[..., H]`, weights `[..., N]`)."""
  kernel, bias = gate.gate_layer.get_weights()
  weights = softmax(gate_input @ kernel + bias)
  return np.einsum("bln,blnh->blh", weights, experts), weights


def randomize_model(model, seed):
  """Randomize every layer that has weights, layer i with seed `seed + i`.

  A test that perturbs one layer afterwards uses a seed of 1000 or more, so it cannot draw the
  same weights again.
  """
  for offset, layer in enumerate(model.layers):
    if layer.weights:
      randomize_weights(layer, seed + offset)
