"""MMoE (Ma et al., KDD 2018): experts shared by all tasks, one softmax gate per task."""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.expert_gate import ExpertGate
from seqmd_tf.layers.expert_group import ExpertGroup
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.expert_input import expert_input
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

      experts = [f_1(x), ..., f_n(x)]                    n = config.num_experts
      logits_k = Tower_k(sum_i softmax(W_k x)_i f_i(x))

  `mask` [batch_size, list_size] bool marks real items for the list context.
  """
  x = expert_input(x, mask, config)
  experts = ExpertGroup(config.num_experts, config.expert_units, config.dropout,
                        name="mmoe_experts")(x)
  logits = {}
  for step, task in enumerate(task_names):
    mixed = ExpertGate(config.num_experts, name=task_layer_name("mmoe_gate", step, task))(
        (x, experts))
    logits[task] = TaskTower(config.tower_units, name=task_layer_name("tower", step, task))(mixed)
  return logits
