"""Keras model that trains a scorer with the multi-task ranking loss.

The scorer (see `seqmd_tf.model`) stays a plain functional model that is exported for serving.
This wrapper only adds the training and evaluation steps, with every loss term in plain sight.
"""

import math
import os
from typing import Dict, Optional, Sequence

import tensorflow as tf
import tensorflow_ranking as tfr
from absl import logging

from seqmd_tf.data import MASK_FEATURE
from seqmd_tf.losses import MultiTaskRankingLoss

# Per-step values logged by train_step besides the epoch means: the step's total loss, and 1.0
# when the update was skipped because the loss or a gradient was NaN or infinite.
STEP_LOSS = "step_loss"
UPDATE_SKIPPED = "update_skipped"


class StepValue(tf.keras.metrics.Metric):
  """The value of the last training step, averaged over the replicas of a synchronous strategy.

  A metric rather than an extra output of train_step: Keras 2.15 takes an epoch's logs from the
  metric results only when every key of the step's logs is a metric. Otherwise it reports the
  last step's outputs, which it sums over the workers of MultiWorkerMirroredStrategy.
  """

  def __init__(self, name: str, **kwargs):
    super().__init__(name=name, **kwargs)
    # A metric weight is read as the sum over replicas, hence the division in update_state.
    self._value = self.add_weight("value", initializer="zeros")

  def update_state(self, value):
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    self._value.assign(tf.cast(value, self.dtype) / replicas)

  def result(self):
    return tf.identity(self._value)


class RankingTrainer(tf.keras.Model):
  """Train `scorer` on (features, labels) batches from `seqmd_tf.data.make_dataset`.

  Logged per step and epoch: `loss` (the total), each term returned by the loss (`loss/<task>`,
  `pointwise/<task>`, `dpr`) and `ndcg@10/<task>` on that task's logits. Each training step
  also returns STEP_LOSS and UPDATE_SKIPPED for `NonFiniteLossGuard`.
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
    self._step_values = {name: StepValue(name) for name in (STEP_LOSS, UPDATE_SKIPPED)}

  def call(self, features, training=False):
    return self.scorer(features, training=training)

  @property
  def metrics(self):
    return (list(self._trackers.values()) + list(self._ndcg.values()) +
            list(self._step_values.values()))

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
      step_loss = total
      # Under a synchronous strategy the optimizer sums the gradients of all replicas, so each
      # replica's mean loss is divided by their number (as Keras' compiled losses do): the
      # update is then the mean of the replica gradients. It equals the gradient of one
      # undivided global batch when every replica's batch has the same number of lists with a
      # positive and of valid items, the denominators of the loss terms.
      total = total / tf.distribute.get_strategy().num_replicas_in_sync
    variables = self.scorer.trainable_variables
    gradients = tape.gradient(total, variables)

    # A NaN or infinite loss or gradient would write NaN into every weight and optimizer slot,
    # so the update is skipped; NonFiniteLossGuard then stops training before any checkpoint.
    finite = _all_finite([step_loss] + [g for g in gradients if g is not None])
    if tf.distribute.has_strategy():
      # Under MirroredStrategy, MultiWorkerMirroredStrategy and ParameterServerStrategy the
      # optimizer's apply_gradients runs a merge_call, which TF rejects inside a tf.cond
      # branch. The step applies zero gradients instead: no change with SGD, but Adam still
      # moves each weight by its decayed momentum, so such a step is not fully skipped.
      self._apply([_zero_if_not(finite, g) for g in gradients], variables)
    else:
      tf.cond(finite, lambda: self._apply(gradients, variables), lambda: tf.constant(False))
    self._step_values[STEP_LOSS].update_state(step_loss)
    self._step_values[UPDATE_SKIPPED].update_state(1.0 - tf.cast(finite, tf.float32))
    return self._update_metrics(terms, labels, logits)

  def _apply(self, gradients, variables) -> tf.Tensor:
    self.optimizer.apply_gradients(zip(gradients, variables))
    return tf.constant(True)

  def test_step(self, data):
    features, labels = data
    logits, terms = self._compute_terms(features, labels, training=False)
    return self._update_metrics(terms, labels, logits)


def _zero_if_not(condition: tf.Tensor, gradient):
  """Return `gradient` (a tensor, IndexedSlices or None) where the scalar tf.bool `condition`
  holds, else zeros of its shape (NaN * 0 is NaN, so tf.where selects instead of multiplying)."""
  if gradient is None:
    return None
  if isinstance(gradient, tf.IndexedSlices):
    values = tf.where(condition, gradient.values, tf.zeros_like(gradient.values))
    return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
  return tf.where(condition, gradient, tf.zeros_like(gradient))


def _all_finite(tensors) -> tf.Tensor:
  """Return a scalar tf.bool: every value of every tensor is finite, on every replica.

  The replicas of a synchronous strategy must agree, because each one's update joins an
  all-reduce of the gradients.
  """
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])
  replica_context = tf.distribute.get_replica_context()
  if replica_context is not None and replica_context.num_replicas_in_sync > 1:
    # tf.distribute.ReduceOp has only SUM and MEAN, so the replicas sum their non-finite flags.
    not_finite = 1.0 - tf.cast(finite, tf.float32)
    finite = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, not_finite) == 0.0
  return finite


class NonFiniteLossError(RuntimeError):
  """The training loss or a gradient became NaN or infinite; training stopped."""


class NonFiniteLossGuard(tf.keras.callbacks.Callback):
  """Stop training at the first step whose loss or gradient is NaN or infinite.

  RankingTrainer.train_step has not applied that step's gradients. This callback raises
  NonFiniteLossError at the end of the step, before BackupAndRestore (listed after it) can
  write a checkpoint, so the last checkpoint keeps the last finite weights.
  """

  def __init__(self, backup_dir: str):
    super().__init__()
    self._backup_dir = backup_dir
    self._epoch = 0
    self._last_finite = None  # (step, loss) of the last step with a finite loss

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    logs = logs or {}
    if STEP_LOSS not in logs:
      return
    loss = float(logs[STEP_LOSS])
    # Keras' count of the steps run, this one included; BackupAndRestore saves and restores it.
    step = int(self.model._train_counter.numpy())  # pylint: disable=protected-access
    if math.isfinite(loss) and not logs.get(UPDATE_SKIPPED):
      self._last_finite = (step, loss)
      return

    cause = (f"the loss is {loss}" if not math.isfinite(loss)
             else f"the loss is {loss:.6g} but a gradient holds NaN or infinite values")
    last = ("no step had a finite loss in this run" if self._last_finite is None else
            f"the last finite loss was {self._last_finite[1]:.6g} at step {self._last_finite[0]}")
    saved = checkpointed_step(self._backup_dir)
    kept = (f"the checkpoint in {self._backup_dir} from step {saved} is kept, and a re-run "
            "resumes from it" if saved is not None else f"no checkpoint was written yet in "
            f"{self._backup_dir}")
    message = (f"training stopped at step {step} (epoch {self._epoch + 1}, batch "
               f"{batch + 1}): {cause}. The gradients of this step were not applied; {last}; "
               f"{kept}. Lower --learning_rate, or check the data with python -m "
               "pipelines.validate.")
    logging.error(message)
    raise NonFiniteLossError(message)


def checkpointed_step(backup_dir: str) -> Optional[int]:
  """Return the training steps done at BackupAndRestore's last checkpoint, or None without one.

  BackupAndRestore (Keras 2.15) writes `<backup_dir>/chief/ckpt-N` with the model, the epoch,
  the batch and the model's train counter. The counter is restored with the model, so it
  counts the steps of every run that trained from this directory.
  """
  path = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if path is None:
    return None
  return int(tf.train.load_checkpoint(path).get_tensor("train_counter/.ATTRIBUTES/VARIABLE_VALUE"))
