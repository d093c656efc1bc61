"""ESMM (Ma et al., SIGIR 2018): each funnel step's probability is the previous one times a
conditional probability, all towers on one shared bottom."""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.probability_chain import ProbabilityChain
from seqmd_tf.layers.shared_encoder import SharedEncoder
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

  The first tower scores p(task 1), and tower t >= 2 scores p(task t | task t-1). The returned
  logits are those of the chained, unconditional probabilities (see ProbabilityChain). So
  every loss is computed on p(task t) over all items, as ESMM trains pCTCVR on the entire space.
  `mask` [batch_size, list_size] bool marks real items for the list context.
  """
  z = SharedEncoder(hidden_units=config.shared_units, dropout=config.dropout,
                    list_context=config.list_context, name="shared_encoder")(x, mask=mask)
  tower_logits = []
  for step, task in enumerate(task_names):
    prefix = "tower" if step == 0 else "conditional_tower"
    tower_logits.append(TaskTower(config.tower_units, name=task_layer_name(prefix, step, task))(z))
  chained = ProbabilityChain(name="esmm_probability_chain")(tower_logits)
  return dict(zip(task_names, chained))
