"""AdaTT (Li et al., KDD 2023): each task fuses all tasks' experts, plus a native-expert
residual."""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.adatt_fusion import AdaTTFusionLevel
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.expert_input import expert_input
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

  `config.adatt_levels` fusion levels (see AdaTTFusionLevel): the first gets x for every
  module, each later one gets the previous level's outputs, and the last one's task outputs
  feed the towers. `config.num_shared_experts = 0` gives AdaTT-sp. `mask`
  [batch_size, list_size] bool marks real items for the list context.
  """
  x = expert_input(x, mask, config)
  num_tasks = len(task_names)
  num_modules = num_tasks + (1 if config.num_shared_experts > 0 else 0)
  outputs = [x] * num_modules
  for level in range(config.adatt_levels):
    outputs = AdaTTFusionLevel(
        num_tasks=num_tasks, num_task_experts=config.num_task_experts,
        num_shared_experts=config.num_shared_experts, expert_units=config.expert_units,
        dropout=config.dropout, is_last=level == config.adatt_levels - 1,
        name=f"adatt_level_{level}")(outputs)
  return {task: TaskTower(config.tower_units, name=task_layer_name("tower", step, task))(
              outputs[step])
          for step, task in enumerate(task_names)}
