"""Single-task baseline: one independent MLP and tower per task, nothing shared between tasks.

NOTE: `seqmd_tf.model.build_scorer` puts one feature encoder (embeddings and normalization)
and the optional region mask in front of every body, so those stay shared by all tasks. The
body below shares nothing, but training T separate models is the only way to share nothing
at all.
"""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.shared_encoder import SharedEncoder
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

  Each task gets its own MLP with widths `config.shared_units` (and the list context when
  `config.list_context`), then its own tower. `mask` [batch_size, list_size] bool marks real
  items for the list context.
  """
  logits = {}
  for step, task in enumerate(task_names):
    encoder = SharedEncoder(hidden_units=config.shared_units, dropout=config.dropout,
                            list_context=config.list_context,
                            name=task_layer_name("encoder", step, task))
    tower = TaskTower(config.tower_units, name=task_layer_name("tower", step, task))
    logits[task] = tower(encoder(x, mask=mask))
  return logits
