"""One fusion level of AdaTT: every task mixes all tasks' experts, plus a native-expert residual."""

import math
from collections.abc import Sequence

import tensorflow as tf

from seqmd_tf.layers.expert_gate import ExpertGate
from seqmd_tf.layers.expert_group import ExpertGroup
from seqmd_tf.layers.validation import check_dropout, check_int, check_units


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class AdaTTFusionLevel(tf.keras.layers.Layer):
  """A fusion level of AdaTT (Li et al., "AdaTT: Adaptive Task-to-Task Fusion Network for
  Multitask Learning in Recommendations", KDD 2023).

  With T tasks, each task k owns m = `num_task_experts` experts E_k, and m_s =
  `num_shared_experts` experts E_s are shared. All M = T * m + m_s experts are stacked into
  E, and every module (each task, and the shared module unless `is_last`) fuses all of them:

      E_k = ExpertGroup_k(in_k),  E_s = ExpertGroup_s(in_s)
      E   = concat(E_1, ..., E_T, E_s)                          [batch_size, list_size, M, H]
      out_k = sum_j softmax(W_k in_k)_j E_j  +  sum_i v_k,i E_k,i

  The first term is the adaptive task-to-task fusion, whose weights are a softmax over all
  experts computed from the module's own input. The second is the native-expert residual,
  a learned linear combination v_k of the module's own experts, initialized uniform in
  [-sqrt(1/m), sqrt(1/m)] as in the authors' code (facebookresearch/AdaTT, mtl_lib.py). A
  module with one expert adds that expert itself (v_k = 1). The authors' shared-expert
  version instead learns v for every module once any module has several experts. The shared
  module, at every level but the last, has the same form with in_s and E_s. With m_s = 0 the
  level has no shared module, the AdaTT-sp variant.

  Call arguments:
    inputs: a list of float32 `[batch_size, list_size, D]` tensors: in_1, ..., in_T in funnel
      order, then in_s when `num_shared_experts > 0`. The first level gets the model input
      in every slot.
    training: whether dropout is active in the experts.

  Returns:
    A list of float32 `[batch_size, list_size, expert_units[-1]]` tensors: out_1, ...,
    out_T, then out_s when `num_shared_experts > 0` and not `is_last`.
  """

  def __init__(
    self,
    num_tasks: int,
    num_task_experts: int = 1,
    num_shared_experts: int = 0,
    expert_units: Sequence[int] = (64,),
    dropout: float = 0.0,
    is_last: bool = True,
    **kwargs,
  ):
    """Create the layer.

    Args:
      num_tasks: T, at least 1.
      num_task_experts: m, experts owned by each task, at least 1.
      num_shared_experts: m_s, shared experts, at least 0.
      expert_units: widths of each expert's ReLU MLP.
      dropout: dropout rate in [0, 1) inside the experts.
      is_last: whether this is the last level, which has no shared output.
      **kwargs: standard `tf.keras.layers.Layer` arguments such as `name`.

    Raises:
      ValueError: if an argument breaks the rule stated for it.
    """
    super().__init__(**kwargs)
    self.num_tasks = check_int("AdaTTFusionLevel", "num_tasks", num_tasks, minimum=1)
    self.num_task_experts = check_int(
      "AdaTTFusionLevel", "num_task_experts", num_task_experts, minimum=1
    )
    self.num_shared_experts = check_int(
      "AdaTTFusionLevel", "num_shared_experts", num_shared_experts, minimum=0
    )
    self.expert_units = check_units(
      "AdaTTFusionLevel", "expert_units", expert_units, allow_empty=False
    )
    self.dropout = check_dropout("AdaTTFusionLevel", dropout)
    self.is_last = bool(is_last)

    # Modules: the T tasks, then the shared one when it has experts. Only the modules that
    # produce an output have a gate.
    self._expert_counts = [self.num_task_experts] * self.num_tasks
    if self.num_shared_experts > 0:
      self._expert_counts.append(self.num_shared_experts)
    self.total_experts = sum(self._expert_counts)
    num_outputs = self.num_tasks
    if self.num_shared_experts > 0 and not self.is_last:
      num_outputs += 1

    names = [f"task_{k}" for k in range(self.num_tasks)] + ["shared"]
    self._experts = [
      ExpertGroup(count, self.expert_units, self.dropout, name=f"{name}_experts")
      for count, name in zip(self._expert_counts, names)
    ]
    self._gates = [
      ExpertGate(self.total_experts, name=f"{name}_gate") for name in names[:num_outputs]
    ]
    self.native_weights = []

  @property
  def experts(self) -> list:
    """One ExpertGroup per module: the tasks in funnel order, then the shared one if any."""
    return list(self._experts)

  @property
  def gates(self) -> list:
    """One ExpertGate over all M experts per module that has an output."""
    return list(self._gates)

  def build(self, input_shape):
    shapes = [tf.TensorShape(shape) for shape in input_shape]
    if len(shapes) != len(self._experts):
      raise ValueError(
        f"AdaTTFusionLevel: inputs must be a list of {len(self._experts)} tensors (one per "
        f"task, then one for the shared experts when num_shared_experts > 0), received "
        f"{len(shapes)}."
      )
    for experts, shape in zip(self._experts, shapes):
      experts.build(shape)
    all_experts_shape = [None, None, self.total_experts, self.expert_units[-1]]
    for gate, shape in zip(self._gates, shapes):
      gate.build([shape, all_experts_shape])

    for module, count in enumerate(self._expert_counts[: len(self._gates)]):
      weight = None
      if count > 1:
        scale = math.sqrt(1.0 / count)
        weight = self.add_weight(
          name=f"native_weights_{module}",
          shape=[count],
          initializer=tf.keras.initializers.RandomUniform(-scale, scale),
        )
      self.native_weights.append(weight)
    super().build(input_shape)

  def expert_outputs(self, inputs, training=None) -> list:
    """Compute every module's experts.

    Args:
      inputs: as in `call`.
      training: whether dropout is active.

    Returns:
      One float32 `[batch_size, list_size, count, H]` tensor per module.
    """
    return [experts(x, training=training) for experts, x in zip(self._experts, inputs)]

  def fusion_weights(self, inputs) -> list:
    """Compute the softmax fusion weights of every module that has an output.

    Args:
      inputs: as in `call`.

    Returns:
      One float32 `[batch_size, list_size, M]` tensor per module, whose M entries follow the
      order of E and sum to 1.
    """
    return [gate.gate_weights(x) for gate, x in zip(self._gates, inputs)]

  def call(self, inputs, training=None):
    module_experts = self.expert_outputs(inputs, training=training)
    all_experts = tf.concat(module_experts, axis=2)

    outputs = []
    for module, gate in enumerate(self._gates):
      fused = gate((inputs[module], all_experts))
      native = module_experts[module]
      if self.native_weights[module] is None:
        residual = native[:, :, 0, :]
      else:
        residual = tf.einsum("n,blnh->blh", self.native_weights[module], native)
      outputs.append(fused + residual)
    return outputs

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape[0])[:-1].concatenate([self.expert_units[-1]])
    return [shape] * len(self._gates)

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
