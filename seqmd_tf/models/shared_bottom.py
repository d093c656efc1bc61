"""Shared-bottom baseline: one MLP shared by all tasks (hard sharing), one tower per task."""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.shared_encoder import SharedEncoder
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

  `mask` [batch_size, list_size] bool marks real items for the list context.
  """
  z = SharedEncoder(hidden_units=config.shared_units, dropout=config.dropout,
                    list_context=config.list_context, name="shared_encoder")(x, mask=mask)
  return {task: TaskTower(config.tower_units, name=task_layer_name("tower", step, task))(z)
          for step, task in enumerate(task_names)}
