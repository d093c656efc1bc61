"""One extraction layer of PLE: task-specific and shared experts with gated outputs."""

from collections.abc import Sequence

import tensorflow as tf

from seqmd_tf.layers.expert_gate import ExpertGate
from seqmd_tf.layers.expert_group import ExpertGroup
from seqmd_tf.layers.validation import check_dropout, check_int, check_units


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class PleExtractionLayer(tf.keras.layers.Layer):
  """An extraction layer of Progressive Layered Extraction (Tang et al., "Progressive
  Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
  Recommendations", RecSys 2020).

  With T tasks, each task k owns `num_task_experts` experts E_k, and `num_shared_experts`
  experts E_s are shared:

      E_k = ExpertGroup_k(in_k)                                    k = 1..T
      E_s = ExpertGroup_s(in_s)
      out_k = Gate_k(in_k, concat(E_k, E_s))                       task k's own and shared experts
      out_s = Gate_s(in_s, concat(E_1, ..., E_T, E_s))             unless is_last

  The last layer of a stack has no shared output, and a single last layer is the
  Customized Gate Control (CGC) model. So task k's experts of the last layer only feed task
  k, while those of an earlier layer also feed the shared gate, and through it every task.

  Call arguments:
    inputs: a list of T + 1 float32 `[batch_size, list_size, D]` tensors: in_1, ..., in_T
      in funnel order, then in_s. The first layer of a stack gets the model input T + 1
      times.
    training: whether dropout is active in the experts.

  Returns:
    A list of float32 `[batch_size, list_size, expert_units[-1]]` tensors: out_1, ..., out_T,
    then out_s unless `is_last`.
  """

  def __init__(
    self,
    num_tasks: int,
    num_task_experts: int = 1,
    num_shared_experts: int = 1,
    expert_units: Sequence[int] = (64,),
    dropout: float = 0.0,
    is_last: bool = True,
    **kwargs,
  ):
    """Create the layer.

    Args:
      num_tasks: T, at least 1.
      num_task_experts: experts owned by each task, at least 1.
      num_shared_experts: experts shared by all tasks, at least 1.
      expert_units: widths of each expert's ReLU MLP.
      dropout: dropout rate in [0, 1) inside the experts.
      is_last: whether this is the last layer of the stack, which has no shared gate.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      ValueError: if an argument breaks the rule stated for it.
    """
    super().__init__(**kwargs)
    self.num_tasks = check_int("PleExtractionLayer", "num_tasks", num_tasks, minimum=1)
    self.num_task_experts = check_int(
      "PleExtractionLayer", "num_task_experts", num_task_experts, minimum=1
    )
    self.num_shared_experts = check_int(
      "PleExtractionLayer", "num_shared_experts", num_shared_experts, minimum=1
    )
    self.expert_units = check_units(
      "PleExtractionLayer", "expert_units", expert_units, allow_empty=False
    )
    self.dropout = check_dropout("PleExtractionLayer", dropout)
    self.is_last = bool(is_last)

    def experts(count, name):
      return ExpertGroup(count, self.expert_units, self.dropout, name=name)

    self._task_experts = [
      experts(self.num_task_experts, f"task_experts_{k}") for k in range(self.num_tasks)
    ]
    self._shared_experts = experts(self.num_shared_experts, "shared_experts")
    self._task_gates = [
      ExpertGate(self.num_task_experts + self.num_shared_experts, name=f"task_gate_{k}")
      for k in range(self.num_tasks)
    ]
    self._shared_gate = None
    if not self.is_last:
      total_experts = self.num_tasks * self.num_task_experts + self.num_shared_experts
      self._shared_gate = ExpertGate(total_experts, name="shared_gate")

  @property
  def task_experts(self) -> list:
    """One ExpertGroup per task in funnel order."""
    return list(self._task_experts)

  @property
  def shared_experts(self) -> ExpertGroup:
    """The ExpertGroup shared by all tasks."""
    return self._shared_experts

  @property
  def task_gates(self) -> list:
    """One ExpertGate per task, over that task's experts followed by the shared ones."""
    return list(self._task_gates)

  @property
  def shared_gate(self) -> ExpertGate | None:
    """The ExpertGate over all experts, or None in the last layer."""
    return self._shared_gate

  def build(self, input_shape):
    shapes = [tf.TensorShape(shape) for shape in input_shape]
    if len(shapes) != self.num_tasks + 1:
      raise ValueError(
        f"PleExtractionLayer: inputs must be a list of num_tasks + 1 = {self.num_tasks + 1} "
        f"tensors (one per task, then the shared one), received {len(shapes)}."
      )
    width = self.expert_units[-1]
    for experts, shape in zip(self._task_experts + [self._shared_experts], shapes):
      experts.build(shape)
    for gate, shape in zip(self._task_gates, shapes):
      gate.build([shape, [None, None, gate.num_experts, width]])
    if self._shared_gate is not None:
      self._shared_gate.build([shapes[-1], [None, None, self._shared_gate.num_experts, width]])
    super().build(input_shape)

  def call(self, inputs, training=None):
    task_inputs, shared_input = list(inputs[:-1]), inputs[-1]
    task_experts = [
      experts(task_input, training=training)
      for experts, task_input in zip(self._task_experts, task_inputs)
    ]
    shared_experts = self._shared_experts(shared_input, training=training)

    outputs = [
      gate((task_input, tf.concat([own_experts, shared_experts], axis=2)))
      for gate, task_input, own_experts in zip(self._task_gates, task_inputs, task_experts)
    ]
    if self._shared_gate is not None:
      all_experts = tf.concat(task_experts + [shared_experts], axis=2)
      outputs.append(self._shared_gate((shared_input, all_experts)))
    return outputs

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape[0])[:-1].concatenate([self.expert_units[-1]])
    return [shape] * (self.num_tasks + (0 if self.is_last else 1))

  def get_config(self):
    config = super().get_config()
    config.update(
      {
        "num_tasks": self.num_tasks,
        "num_task_experts": self.num_task_experts,
        "num_shared_experts": self.num_shared_experts,
        "expert_units": list(self.expert_units),
        "dropout": self.dropout,
        "is_last": self.is_last,
      }
    )
    return config
