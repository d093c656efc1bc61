"""SEQ: the tasks of the funnel as a sequence, one GRU step per task."""

import numbers
import re
from collections.abc import Sequence

import tensorflow as tf

INITIAL_STATES = ("zeros", "dense")

# Range of Keras' default Embedding initializer, reused for the task embeddings.
_TASK_EMBEDDING_INIT_SCALE = 0.05


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class SeqTaskChain(tf.keras.layers.Layer):
  """Unrolls one GRU cell over the tasks in funnel order and scores each task.

  For every item, with T = len(task_names):

      h_0 = 0                 (initial_state="zeros")
      h_0 = Dense(z)          (initial_state="dense", linear)
      h_t = GRUCell(input=z (+ e_t when task_embedding=True), state=h_{t-1}),  t = 1..T
      s_t = Tower_t(h_t)      logit of task t

  One GRU cell, with one set of weights, is shared by all steps. The hidden state
  carries what an earlier task learned into the next one, so that sparse late tasks
  (purchase) can borrow from dense early ones (click). `e_t` is a learned embedding of task t, added to
  the input. A tower is a ReLU MLP with widths `tower_units`, followed by Dense(1).

  Call arguments:
    z: float32 `[batch_size, list_size, H]`, the shared encoding of every item.
    training: passed to the GRU cell.
    return_states: if True, also return the hidden states (for tests and inspection).

  Returns:
    A dict {task_name: float32 logits `[batch_size, list_size]`} whose keys follow the
    funnel order of `task_names`. With `return_states=True`, the pair
    `(logits, states)` where `states` is the list [h_0, h_1, ..., h_T] of float32
    `[batch_size, list_size, units]` tensors.
    Keras and tf.nest sort dict keys when they flatten a structure, so read the tasks in
    the order of `task_names` rather than from a flattened output.
  """

  def __init__(
    self,
    task_names: Sequence[str],
    units: int = 32,
    tower_units: Sequence[int] = (16,),
    initial_state: str = "zeros",
    task_embedding: bool = False,
    **kwargs,
  ):
    """Create the layer.

    Args:
      task_names: task names in funnel order, for example ["click", "purchase"].
      units: width of the GRU hidden state.
      tower_units: widths of the ReLU hidden layers of each task tower. An empty
        sequence makes each tower a single Dense(1).
      initial_state: `"zeros"` or `"dense"`, see the class docstring.
      task_embedding: whether to add a learned per-task embedding to the GRU input.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      TypeError: if `task_names` or `tower_units` is a single value instead of a list.
      ValueError: if an argument breaks the rule stated for it.
    """
    super().__init__(**kwargs)
    self.task_names = _validate_task_names(task_names)
    if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
      raise ValueError(f"SeqTaskChain: units must be an int > 0, received {units!r}.")
    self.units = int(units)
    self.tower_units = _validate_tower_units(tower_units)
    if initial_state not in INITIAL_STATES:
      raise ValueError(
        f"SeqTaskChain: initial_state must be one of {INITIAL_STATES}, received {initial_state!r}."
      )
    self.initial_state = initial_state
    self.task_embedding = bool(task_embedding)

    self._cell = tf.keras.layers.GRUCell(self.units, name="gru_cell")
    self._initial_state_layer = (
      tf.keras.layers.Dense(self.units, name="initial_state") if initial_state == "dense" else None
    )
    self._towers = [self._make_tower(step, task) for step, task in enumerate(self.task_names)]

  def _make_tower(self, step: int, task: str) -> tf.keras.Sequential:
    # Layer names allow only some characters, so other characters of a task name
    # become "_".
    prefix = f"tower_{step}_{re.sub(r'[^A-Za-z0-9_.-]', '_', task)}"
    hidden = [
      tf.keras.layers.Dense(units, activation="relu", name=f"{prefix}_hidden_{i}")
      for i, units in enumerate(self.tower_units)
    ]
    # One Sequential per tower rather than a nested list of layers, because the
    # `.keras` format saves the layers of a list but not those of a list of lists.
    return tf.keras.Sequential(
      hidden + [tf.keras.layers.Dense(1, name=f"{prefix}_logit")], name=prefix
    )

  @property
  def gru_cell(self) -> tf.keras.layers.GRUCell:
    """The GRU cell shared by all steps."""
    return self._cell

  @property
  def towers(self) -> list:
    """One Sequential tower per task in funnel order, its last layer being Dense(1)."""
    return list(self._towers)

  @property
  def initial_state_layer(self) -> tf.keras.layers.Dense | None:
    """The Dense layer that computes h_0, or None when initial_state is "zeros"."""
    return self._initial_state_layer

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 3 or input_shape[-1] is None:
      raise ValueError(
        "SeqTaskChain: z must have shape [batch_size, list_size, H] with a known H, "
        f"received shape {input_shape}."
      )
    encoding_width = input_shape[-1]

    self._cell.build(tf.TensorShape([None, encoding_width]))
    if self._initial_state_layer is not None:
      self._initial_state_layer.build(tf.TensorShape([None, encoding_width]))
    for tower in self._towers:
      tower.build(tf.TensorShape([None, self.units]))

    if self.task_embedding:
      self.task_embeddings = self.add_weight(
        name="task_embeddings",
        shape=[len(self.task_names), encoding_width],
        initializer=tf.keras.initializers.RandomUniform(
          -_TASK_EMBEDDING_INIT_SCALE, _TASK_EMBEDDING_INIT_SCALE
        ),
      )
    super().build(input_shape)

  def call(self, z, training=None, return_states=False):
    batch_size, list_size = tf.shape(z)[0], tf.shape(z)[1]
    # Every item runs its own chain, so batch and list dimensions flatten into one.
    items = tf.reshape(z, [-1, z.shape[-1]])

    if self._initial_state_layer is None:
      state = tf.zeros([tf.shape(items)[0], self.units], dtype=items.dtype)
    else:
      state = self._initial_state_layer(items)

    logits = {}
    states = [state]
    for step, task in enumerate(self.task_names):
      step_input = items
      if self.task_embedding:
        step_input = items + self.task_embeddings[step]
      output, (state,) = self._cell(step_input, [state], training=training)
      states.append(state)

      task_logits = self._towers[step](output)
      logits[task] = tf.reshape(task_logits, [batch_size, list_size])

    if not return_states:
      return logits
    item_states = [tf.reshape(h, [batch_size, list_size, self.units]) for h in states]
    return logits, item_states

  def get_config(self):
    config = super().get_config()
    config.update(
      {
        "task_names": list(self.task_names),
        "units": self.units,
        "tower_units": list(self.tower_units),
        "initial_state": self.initial_state,
        "task_embedding": self.task_embedding,
      }
    )
    return config


def _validate_task_names(task_names: Sequence[str]) -> tuple:
  """Return `task_names` as a tuple, raising unless it is a list of unique names."""
  if isinstance(task_names, str):
    raise TypeError(
      f"SeqTaskChain: task_names must be a list of task names, received {task_names!r}. "
      f"Write [{task_names!r}] for a single task."
    )
  if not task_names:
    raise ValueError(
      "SeqTaskChain: task_names must be a non-empty list of task names in funnel "
      f"order, received {task_names!r}."
    )
  task_names = tuple(task_names)
  if not all(isinstance(task, str) and task for task in task_names):
    raise ValueError(
      f"SeqTaskChain: every task name must be a non-empty string, received {task_names!r}."
    )
  if len(set(task_names)) != len(task_names):
    raise ValueError(f"SeqTaskChain: task names must be unique, received {task_names!r}.")
  return task_names


def _validate_tower_units(tower_units: Sequence[int]) -> tuple:
  """Return `tower_units` as a tuple of ints, raising unless it is a list of ints > 0."""
  if isinstance(tower_units, (numbers.Number, str)):
    raise TypeError(
      f"SeqTaskChain: tower_units must be a list of ints, received {tower_units!r}. "
      f"Write [{tower_units!r}] for a single hidden layer."
    )
  tower_units = tuple(tower_units)
  for units in tower_units:
    if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
      raise ValueError(
        f"SeqTaskChain: every entry of tower_units must be an int > 0, received {tower_units!r}."
      )
  return tuple(int(units) for units in tower_units)
