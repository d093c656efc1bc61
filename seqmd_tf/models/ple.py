"""PLE (Tang et al., RecSys 2020): shared and task-specific experts in stacked extraction layers."""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.ple_extraction import PleExtractionLayer
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.expert_input import expert_input
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

  `config.ple_levels` extraction layers (see PleExtractionLayer): the first gets x for every
  task and for the shared experts, each later one gets the previous layer's task and shared
  outputs, and the last one's task outputs feed the towers. One level is CGC. `mask`
  [batch_size, list_size] bool marks real items for the list context.
  """
  x = expert_input(x, mask, config)
  num_tasks = len(task_names)
  outputs = [x] * (num_tasks + 1)
  for level in range(config.ple_levels):
    outputs = PleExtractionLayer(
        num_tasks=num_tasks, num_task_experts=config.num_task_experts,
        num_shared_experts=config.num_shared_experts, expert_units=config.expert_units,
        dropout=config.dropout, is_last=level == config.ple_levels - 1,
        name=f"ple_level_{level}")(outputs)
  return {task: TaskTower(config.tower_units, name=task_layer_name("tower", step, task))(
              outputs[step])
          for step, task in enumerate(task_names)}
