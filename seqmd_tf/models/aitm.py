"""AITM (Xi et al., KDD 2021): per-task towers, information carried from task t-1 to task t
by the attention of the Adaptive Information Transfer (AIT) module.

AITM's behavioral expectation calibrator, sum_t max(0, p_t - p_{t-1}), is the descending
probability regularizer that `seqmd_tf.losses.MultiTaskRankingLoss` adds for every model with
weight `--dpr_weight`, so this body adds no loss of its own. Set `--dpr_weight=0` to train
AITM without its calibrator.
"""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.ait import AdaptiveInformationTransfer
from seqmd_tf.layers.shared_encoder import SharedEncoder
from seqmd_tf.layers.task_tower import TaskTower
from seqmd_tf.models.naming import task_layer_name


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

      q_t = MLP_t(x)                              widths config.shared_units, one MLP per task
      z_1 = q_1,  z_t = AIT(q_t, z_{t-1})         t = 2..T (see AdaptiveInformationTransfer)
      logits_t = Tower_t(z_t)

  Only the feature encoder in front of the body is shared, as AITM shares the embeddings.
  `mask` [batch_size, list_size] bool marks real items for the list context.
  """
  q = [SharedEncoder(hidden_units=config.shared_units, dropout=config.dropout,
                     list_context=config.list_context,
                     name=task_layer_name("aitm_encoder", step, task))(x, mask=mask)
       for step, task in enumerate(task_names)]
  z = AdaptiveInformationTransfer(num_tasks=len(task_names), units=config.aitm_units,
                                  dropout=config.dropout, name="ait")(q)
  return {task: TaskTower(config.tower_units, name=task_layer_name("tower", step, task))(z[step])
          for step, task in enumerate(task_names)}
