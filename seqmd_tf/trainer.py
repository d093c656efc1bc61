"""Keras model that trains a scorer with the multi-task ranking loss.

The scorer (see `seqmd_tf.model`) stays a plain functional model that is exported for serving;
this wrapper only adds the training and evaluation steps, with every loss term in plain sight.
"""

from typing import Dict, Sequence

import tensorflow as tf
import tensorflow_ranking as tfr

from seqmd_tf.data import MASK_FEATURE
from seqmd_tf.losses import MultiTaskRankingLoss


class RankingTrainer(tf.keras.Model):
  """Train `scorer` on (features, labels) batches from `seqmd_tf.data.make_dataset`.

  Logged per step and epoch: `loss` (the total), each term returned by the loss (`loss/<task>`,
  `pointwise/<task>`, `dpr`) and `ndcg@10/<task>` on that task's logits.
  """

  def __init__(self, scorer: tf.keras.Model, tasks: Sequence[str], loss: MultiTaskRankingLoss,
               **kwargs):
    super().__init__(**kwargs)
    self.scorer = scorer
    self.tasks = list(tasks)
    self.ranking_loss = loss
    term_names = (["loss"] + [f"loss/{t}" for t in self.tasks] +
                  [f"pointwise/{t}" for t in self.tasks] + ["dpr"])
    self._trackers: Dict[str, tf.keras.metrics.Mean] = {
        name: tf.keras.metrics.Mean(name=name) for name in term_names}
    self._ndcg = {task: tfr.keras.metrics.NDCGMetric(topn=10, name=f"ndcg@10/{task}")
                  for task in self.tasks}

  def call(self, features, training=False):
    return self.scorer(features, training=training)

  @property
  def metrics(self):
    return list(self._trackers.values()) + list(self._ndcg.values())

  def _compute_terms(self, features, labels, training: bool):
    outputs = self.scorer(features, training=training)
    logits = {task: outputs[task] for task in self.tasks}
    terms = self.ranking_loss(labels, logits, features[MASK_FEATURE])
    return logits, terms

  def _update_metrics(self, terms, labels, logits):
    for name, value in terms.items():
      if name in self._trackers:
        self._trackers[name].update_state(value)
    for task in self.tasks:
      # Lists without a positive for the task have no defined NDCG; weight them 0, as the
      # offline evaluation excludes them.
      has_positive = tf.reduce_any(labels[task] > 0, axis=1, keepdims=True)
      self._ndcg[task].update_state(labels[task], logits[task],
                                    sample_weight=tf.cast(has_positive, tf.float32))
    return {m.name: m.result() for m in self.metrics}

  def train_step(self, data):
    features, labels = data
    with tf.GradientTape() as tape:
      logits, terms = self._compute_terms(features, labels, training=True)
      total = terms["loss"] + tf.add_n(self.scorer.losses) if self.scorer.losses else terms["loss"]
    variables = self.scorer.trainable_variables
    gradients = tape.gradient(total, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    return self._update_metrics(terms, labels, logits)

  def test_step(self, data):
    features, labels = data
    logits, terms = self._compute_terms(features, labels, training=False)
    return self._update_metrics(terms, labels, logits)
