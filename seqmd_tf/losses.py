"""Losses of SEQ+MD: listwise ranking, pointwise calibration and the funnel regularizer.

    L = sum_t w_t * L_rank(s_t, y_t)
        + pointwise_weight * sum_t SigmoidCE(s_t, y_t)
        + dpr_weight * L_dpr

Labels are float32 `[batch_size, list_size]`, one tensor per task. A label below 0
(PADDING_LABEL) marks a padded item or a missing label, and every term ignores it.
"""

from collections.abc import Mapping, Sequence

import tensorflow as tf
import tensorflow_ranking as tfr

# Label of padded items and of missing labels (a dataset without that task). Any label
# below 0 counts as invalid, the same rule as tfr.utils.is_label_valid.
PADDING_LABEL = -1

_RANKING_LOSSES = {
  "softmax": tfr.keras.losses.SoftmaxLoss,
  "approx_ndcg": tfr.keras.losses.ApproxNDCGLoss,
  "list_mle": tfr.keras.losses.ListMLELoss,
}
LISTWISE_LOSSES = tuple(_RANKING_LOSSES)


def _valid_labels(labels: tf.Tensor) -> tf.Tensor:
  """Return bool `[batch_size, list_size]`: True where the label is not padding or missing."""
  return tf.greater_equal(labels, 0.0)


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class ListwiseRankingLoss(tf.keras.losses.Loss):
  """A TF-Ranking listwise loss averaged over the lists that have a positive label.

      loss = sum over lists with a positive of l_i  /  number of lists with a positive

  l_i is the per-list value of the TF-Ranking loss named `ranking_loss`
  (tensorflow-ranking 0.5.5):
    - `"softmax"`: -sum_j y_j * log(softmax(s)_j), that is the cross-entropy against
      the normalized labels weighted by the list's label sum.
    - `"approx_ndcg"`: -ApproxNDCG(s, y), with TF-Ranking's default temperature 0.1.
    - `"list_mle"`: the negative log-likelihood of the label order under the
      Plackett-Luce model. Ties between equal labels are ordered at random (seeded by the
      graph-level seed), so with binary labels the value varies from call to call.

  Items with label < 0 take no part in l_i. A list without a positive label has no order
  to learn, so it adds 0 and does not count in the denominator. A batch without any
  positive gives 0.

  Call arguments:
    y_true: labels, float32 `[batch_size, list_size]`, PADDING_LABEL for padded items.
    y_pred: logits, float32 `[batch_size, list_size]`.
    sample_weight: must be None. Mask items with label -1 instead.

  Returns:
    A float32 scalar.
  """

  def __init__(self, ranking_loss: str = "softmax", name: str | None = None):
    """Create the loss.

    Args:
      ranking_loss: one of LISTWISE_LOSSES.
      name: name of the loss, `<ranking_loss>_loss` by default.

    Raises:
      ValueError: if `ranking_loss` is unknown.
    """
    if ranking_loss not in _RANKING_LOSSES:
      raise ValueError(
        f"ListwiseRankingLoss: ranking_loss must be one of {LISTWISE_LOSSES}, "
        f"received {ranking_loss!r}."
      )
    super().__init__(reduction=tf.keras.losses.Reduction.NONE, name=name or f"{ranking_loss}_loss")
    self.ranking_loss = ranking_loss
    self._tfr_loss = _RANKING_LOSSES[ranking_loss](reduction=tf.keras.losses.Reduction.NONE)

  def per_list_losses(self, labels: tf.Tensor, logits: tf.Tensor):
    """Compute the loss of every list.

    Args:
      labels: float32 `[batch_size, list_size]`, PADDING_LABEL for padded items.
      logits: float32 `[batch_size, list_size]`.

    Returns:
      A pair of `[batch_size]` tensors: float32 per-list losses, set to 0 for lists
      without a positive label, and bool `has_positive`.
    """
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    valid = _valid_labels(labels)
    has_positive = tf.reduce_any(valid & tf.greater(labels, 0.0), axis=1)

    losses = tf.reshape(self._tfr_loss(labels, logits), [-1])
    if self.ranking_loss == "list_mle":
      losses -= _list_mle_padding_term(valid)

    return tf.where(has_positive, losses, tf.zeros_like(losses)), has_positive

  def call(self, y_true, y_pred):
    losses, _ = self.per_list_losses(y_true, y_pred)
    return losses

  def __call__(self, y_true, y_pred, sample_weight=None):
    if sample_weight is not None:
      raise ValueError(
        f"{self.name}: sample_weight is not supported. Set the label of an item "
        f"to {PADDING_LABEL} to leave it out of the loss."
      )
    with tf.name_scope(self.name):
      losses, has_positive = self.per_list_losses(y_true, y_pred)
      num_lists = tf.reduce_sum(tf.cast(has_positive, tf.float32))
      return tf.math.divide_no_nan(tf.reduce_sum(losses), num_lists)

  def get_config(self):
    return {"ranking_loss": self.ranking_loss, "name": self.name}


def _list_mle_padding_term(valid: tf.Tensor) -> tf.Tensor:
  """Return float32 `[batch_size]`: log(k!) for a list with k padded items.

  TF-Ranking's ListMLE gives the k padded items of a list a tiny equal logit and sorts
  them last. Their Plackett-Luce terms then add log(k) + log(k - 1) + ... + log(1) =
  log(k!) to the list's loss (measured on tensorflow-ranking 0.5.5). The term is
  constant, so it has no gradient, but it would make the reported loss depend on the
  padding.
  """
  num_padded = tf.reduce_sum(tf.cast(~valid, tf.float32), axis=1)
  return tf.math.lgamma(num_padded + 1.0)


def listwise_loss(name: str) -> ListwiseRankingLoss:
  """Return the listwise loss `name` ("softmax", "approx_ndcg" or "list_mle").

  See ListwiseRankingLoss for how padded items and lists without a positive label are
  handled.
  """
  return ListwiseRankingLoss(ranking_loss=name)


def masked_sigmoid_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Compute the mean sigmoid cross-entropy over the items with a valid label.

      loss = sum over items with y >= 0 of -(y log sigmoid(s) + (1 - y) log(1 - sigmoid(s)))
             / number of items with y >= 0

  Args:
    labels: float32 `[batch_size, list_size]` in [0, 1], PADDING_LABEL for padded
      items and missing labels.
    logits: float32 `[batch_size, list_size]`.

  Returns:
    A float32 scalar, 0 when no item has a valid label.
  """
  labels = tf.cast(labels, tf.float32)
  logits = tf.cast(logits, tf.float32)
  valid = _valid_labels(labels)

  # Invalid labels become 0 before the loss so the per-item values stay finite.
  safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
  per_item = tf.nn.sigmoid_cross_entropy_with_logits(labels=safe_labels, logits=logits)
  per_item = tf.where(valid, per_item, tf.zeros_like(per_item))

  num_valid = tf.reduce_sum(tf.cast(valid, tf.float32))
  return tf.math.divide_no_nan(tf.reduce_sum(per_item), num_valid)


def dpr_loss(
  probs: Sequence[tf.Tensor],
  mask: tf.Tensor,
  pair_masks: Sequence[tf.Tensor] | None = None,
) -> tf.Tensor:
  """Compute the Descending Probability Regularizer (DPR) over the funnel.

  A user cannot add to cart or purchase without clicking first, so the predicted
  probabilities should not rise along the funnel. The regularizer penalizes every rise
  with a hinge. AITM's behavioral expectation calibrator uses the same hinge for one
  click -> purchase pair (Xi et al., "Modeling the Sequential Dependence among Audience
  Multi-step Conversions with Multi-task Learning in Targeted Display Advertising",
  KDD 2021, arXiv:2105.08489). This sums it over every pair of consecutive tasks:

      L_dpr = sum over valid items of sum_{t=2..T} max(0, p_t - p_{t-1})
              / number of valid items

  Args:
    probs: T float32 `[batch_size, list_size]` probabilities in funnel order.
    mask: bool `[batch_size, list_size]`, True for the items counted in the numerator
      and the denominator (the non-padded items).
    pair_masks: optional T - 1 bool `[batch_size, list_size]` masks. Pair t, between
      tasks t and t + 1 counted from 1, adds its hinge only where `pair_masks[t - 1]` is
      also True, for example where both tasks have a label. The denominator stays the
      number of items in `mask`.

  Returns:
    A float32 scalar, 0 when T == 1 or no item is valid, never NaN.

  Raises:
    ValueError: if `probs` is empty or `pair_masks` does not have T - 1 entries.
  """
  if not probs:
    raise ValueError("dpr_loss: probs must contain at least one task, received an empty list.")
  if pair_masks is not None and len(pair_masks) != len(probs) - 1:
    raise ValueError(
      f"dpr_loss: pair_masks must contain one mask per pair of consecutive tasks "
      f"({len(probs) - 1}), received {len(pair_masks)}."
    )

  mask = tf.cast(mask, tf.bool)
  total = tf.constant(0.0, dtype=tf.float32)
  for pair in range(len(probs) - 1):
    rise = tf.nn.relu(tf.cast(probs[pair + 1], tf.float32) - tf.cast(probs[pair], tf.float32))
    counted = mask
    if pair_masks is not None:
      counted = counted & tf.cast(pair_masks[pair], tf.bool)
    total += tf.reduce_sum(tf.where(counted, rise, tf.zeros_like(rise)))

  num_valid = tf.reduce_sum(tf.cast(mask, tf.float32))
  return tf.math.divide_no_nan(total, num_valid)


class MultiTaskRankingLoss:
  """The full SEQ+MD training loss, with every term returned for logging.

      loss = sum_t w_t * L_rank(s_t, y_t)
             + pointwise_weight * sum_t SigmoidCE(s_t, y_t)
             + dpr_weight * L_dpr(sigmoid(s_1), ..., sigmoid(s_T))

  L_rank is a ListwiseRankingLoss and SigmoidCE is masked_sigmoid_cross_entropy. Listwise
  losses are shift-invariant within a list, so the pointwise term anchors sigmoid(s_t) to
  the label rate. The DPR compares these probabilities, and a pooled AUC compares logits
  across lists.

  The DPR of a pair of consecutive tasks counts an item only where the list mask is True
  and both tasks have a label, so a dataset without a task adds no DPR for the pairs that
  include it.
  """

  def __init__(
    self,
    task_names: Sequence[str],
    listwise_loss: str = "softmax",
    task_weights: Sequence[float] | Mapping[str, float] | None = None,
    pointwise_weight: float = 0.1,
    dpr_weight: float = 0.1,
  ):
    """Create the loss.

    Args:
      task_names: task names in funnel order.
      listwise_loss: one of LISTWISE_LOSSES.
      task_weights: w_t, one float >= 0 per task, either in funnel order or as a dict
        keyed by task name. None weights every task 1.0.
      pointwise_weight: weight >= 0 of the summed pointwise cross-entropy terms.
      dpr_weight: weight >= 0 of the DPR. 0 turns the regularizer off, but its value
        is still returned for monitoring.

    Raises:
      ValueError: if an argument breaks the rule stated for it.
    """
    if isinstance(task_names, str) or not task_names:
      raise ValueError(
        "MultiTaskRankingLoss: task_names must be a non-empty list in funnel order, "
        f"received {task_names!r}."
      )
    self.task_names = tuple(task_names)
    if len(set(self.task_names)) != len(self.task_names):
      raise ValueError(
        f"MultiTaskRankingLoss: task names must be unique, received {self.task_names!r}."
      )
    self.task_weights = _resolve_task_weights(self.task_names, task_weights)
    for argument, value in (("pointwise_weight", pointwise_weight), ("dpr_weight", dpr_weight)):
      if value < 0:
        raise ValueError(f"MultiTaskRankingLoss: {argument} must be >= 0, received {value!r}.")
    self.pointwise_weight = float(pointwise_weight)
    self.dpr_weight = float(dpr_weight)
    self.ranking_loss = ListwiseRankingLoss(ranking_loss=listwise_loss)

  def __call__(
    self,
    labels: Mapping[str, tf.Tensor],
    logits: Mapping[str, tf.Tensor],
    mask: tf.Tensor,
  ) -> dict[str, tf.Tensor]:
    """Compute the total loss and each of its terms.

    Args:
      labels: {task: float32 `[batch_size, list_size]`}, PADDING_LABEL for padded
        items and missing labels.
      logits: {task: float32 `[batch_size, list_size]`}, same keys.
      mask: bool `[batch_size, list_size]`, True for non-padded items.

    Returns:
      A dict of float32 scalars: `loss` (the weighted total), then for each task in
      funnel order `loss/<task>` (the listwise loss) and `pointwise/<task>`, then
      `dpr`. The terms are the values before weighting.

    Raises:
      ValueError: if `labels` or `logits` has no entry for a task.
    """
    for argument, values in (("labels", labels), ("logits", logits)):
      missing = [task for task in self.task_names if task not in values]
      if missing:
        raise ValueError(
          f"MultiTaskRankingLoss: {argument} has no entry for tasks {missing}. "
          f"Received keys {sorted(values)}, expected {list(self.task_names)}."
        )

    terms = {}
    total = tf.constant(0.0, dtype=tf.float32)
    for task, weight in zip(self.task_names, self.task_weights):
      ranking = self.ranking_loss(labels[task], logits[task])
      pointwise = masked_sigmoid_cross_entropy(labels[task], logits[task])
      terms[f"loss/{task}"] = ranking
      terms[f"pointwise/{task}"] = pointwise
      total += weight * ranking + self.pointwise_weight * pointwise

    probs = [tf.sigmoid(tf.cast(logits[task], tf.float32)) for task in self.task_names]
    pair_masks = [
      _valid_labels(tf.cast(labels[earlier], tf.float32))
      & _valid_labels(tf.cast(labels[later], tf.float32))
      for earlier, later in zip(self.task_names[:-1], self.task_names[1:])
    ]
    terms["dpr"] = dpr_loss(probs, mask, pair_masks)
    total += self.dpr_weight * terms["dpr"]

    return {"loss": total, **terms}

  def get_config(self) -> dict:
    """Return the constructor arguments, for writing the resolved configuration."""
    return {
      "task_names": list(self.task_names),
      "listwise_loss": self.ranking_loss.ranking_loss,
      "task_weights": list(self.task_weights),
      "pointwise_weight": self.pointwise_weight,
      "dpr_weight": self.dpr_weight,
    }


def _resolve_task_weights(
  task_names: Sequence[str],
  task_weights: Sequence[float] | Mapping[str, float] | None,
) -> tuple:
  """Return one float weight per task in funnel order, raising ValueError when invalid."""
  if task_weights is None:
    return tuple(1.0 for _ in task_names)

  if isinstance(task_weights, Mapping):
    unknown = sorted(set(task_weights) - set(task_names))
    missing = [task for task in task_names if task not in task_weights]
    if unknown or missing:
      raise ValueError(
        f"MultiTaskRankingLoss: task_weights must have one entry per task "
        f"{list(task_names)}. Unknown tasks: {unknown}, missing tasks: {missing}."
      )
    weights = tuple(float(task_weights[task]) for task in task_names)
  else:
    weights = tuple(float(weight) for weight in task_weights)
    if len(weights) != len(task_names):
      raise ValueError(
        f"MultiTaskRankingLoss: task_weights must have one weight per task "
        f"{list(task_names)} in funnel order, received {list(weights)}."
      )

  if any(weight < 0 for weight in weights):
    raise ValueError(f"MultiTaskRankingLoss: task_weights must be >= 0, received {list(weights)}.")
  return weights
