"""SEQ: a shared per-item MLP, then one GRU cell unrolled over the tasks in funnel order."""

from typing import Dict, Sequence

import tensorflow as tf

from seqmd_tf.config import ModelConfig
from seqmd_tf.layers.seq_chain import SeqTaskChain
from seqmd_tf.layers.shared_encoder import SharedEncoder


def build_logits(x: tf.Tensor, mask: tf.Tensor, task_names: Sequence[str],
                 config: ModelConfig) -> Dict[str, tf.Tensor]:
  """Return {task: logits [batch_size, list_size]} for x [batch_size, list_size, D].

  `mask` [batch_size, list_size] bool marks real items (used by the list-context features).
  """
  z = SharedEncoder(hidden_units=config.shared_units, dropout=config.dropout,
                    list_context=config.list_context, name="shared_encoder")(x, mask=mask)
  return SeqTaskChain(task_names=list(task_names), units=config.gru_units,
                      tower_units=config.tower_units, initial_state=config.initial_state,
                      task_embedding=config.task_embedding, name="seq_task_chain")(z)
