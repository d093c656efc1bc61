"""Tests for the SEQ+MD losses against hand-computed and numpy references."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_ranking as tfr

from seqmd_tf import losses
from seqmd_tf.losses import PADDING_LABEL

TASKS = ["click", "cart", "purchase"]

# List A has distinct labels, so ListMLE has a single label order and a fixed value.
LIST_A_LABELS = [2.0, 0.0, 1.0]
LIST_A_LOGITS = [0.3, -0.4, 1.1]
# List B has no positive label.
LIST_B_LABELS = [0.0, 0.0, 0.0]
LIST_B_LOGITS = [0.5, 2.0, -1.0]


def _constant(rows):
  return tf.constant(rows, dtype=tf.float32)


def _pad(row, length, value):
  return list(row) + [value] * (length - len(row))


def _reference_softmax(labels, logits):
  """Compute -sum_j y_j * log(softmax(s)_j) over the valid items of one list."""
  labels, logits = np.asarray(labels), np.asarray(logits)
  valid = labels >= 0
  log_softmax = logits[valid] - np.log(np.sum(np.exp(logits[valid])))
  return -np.sum(labels[valid] * log_softmax)


def _reference_list_mle(labels, logits):
  """Compute the Plackett-Luce negative log-likelihood of the label order (no ties)."""
  labels, logits = np.asarray(labels), np.asarray(logits)
  valid = labels >= 0
  ordered = logits[valid][np.argsort(-labels[valid], kind="stable")]
  return sum(np.log(np.sum(np.exp(ordered[i:]))) - ordered[i] for i in range(len(ordered)))


# DPR


def test_dpr_matches_hand_computed_value():
  probs = [_constant([[0.5, 0.2, 0.9]]), _constant([[0.6, 0.1, 0.3]]), _constant([[0.1, 0.4, 0.2]])]
  mask = tf.constant([[True, True, True]])

  value = losses.dpr_loss(probs, mask).numpy()

  # Item 1: max(0, 0.6 - 0.5) + max(0, 0.1 - 0.6) = 0.1.
  # Item 2: max(0, 0.1 - 0.2) + max(0, 0.4 - 0.1) = 0.3.
  # Item 3: max(0, 0.3 - 0.9) + max(0, 0.2 - 0.3) = 0.
  assert value == pytest.approx(0.4 / 3, rel=1e-6)


def test_dpr_excludes_padded_items():
  probs = [_constant([[0.5, 0.2, 0.1]]), _constant([[0.6, 0.1, 0.9]]), _constant([[0.1, 0.4, 0.9]])]
  mask = tf.constant([[True, True, False]])

  value = losses.dpr_loss(probs, mask).numpy()

  assert value == pytest.approx(0.4 / 2, rel=1e-6)


def test_dpr_matches_numpy_reference():
  rng = np.random.default_rng(0)
  probs = rng.uniform(size=(3, 4, 6)).astype(np.float32)
  mask = rng.uniform(size=(4, 6)) < 0.7

  value = losses.dpr_loss([tf.constant(p) for p in probs], tf.constant(mask)).numpy()

  rises = np.maximum(probs[1:] - probs[:-1], 0.0).sum(axis=0)
  assert value == pytest.approx(rises[mask].sum() / mask.sum(), rel=1e-5)


def test_dpr_pair_masks_keep_denominator():
  probs = [_constant([[0.5, 0.2]]), _constant([[0.6, 0.1]]), _constant([[0.1, 0.4]])]
  mask = tf.constant([[True, True]])
  pair_masks = [tf.constant([[True, True]]), tf.constant([[False, False]])]

  value = losses.dpr_loss(probs, mask, pair_masks).numpy()

  # Only the first pair counts: item 1 rises by 0.1, item 2 falls.
  assert value == pytest.approx(0.1 / 2, rel=1e-6)


def test_dpr_without_valid_items_is_zero():
  logits = tf.Variable([[0.3, -2.0], [1.0, 0.5]])
  mask = tf.zeros([1, 2], tf.bool)

  with tf.GradientTape() as tape:
    probs = [tf.sigmoid(logits[0:1]), tf.sigmoid(logits[1:2])]
    value = losses.dpr_loss(probs, mask)
  gradient = tape.gradient(value, logits)

  assert value.numpy() == 0.0
  assert np.all(np.isfinite(gradient.numpy()))


def test_dpr_of_single_task_is_zero():
  value = losses.dpr_loss([_constant([[0.2, 0.9]])], tf.constant([[True, True]]))

  assert value.numpy() == 0.0


def test_dpr_rejects_empty_probs():
  with pytest.raises(ValueError) as error:
    losses.dpr_loss([], tf.constant([[True]]))

  assert "received an empty list" in str(error.value)


def test_dpr_rejects_wrong_number_of_pair_masks():
  probs = [_constant([[0.5]]), _constant([[0.6]])]

  with pytest.raises(ValueError) as error:
    losses.dpr_loss(probs, tf.constant([[True]]), pair_masks=[])

  assert "one mask per pair of consecutive tasks (1), received 0" in str(error.value)


# Pointwise sigmoid cross-entropy


def test_sigmoid_cross_entropy_matches_numpy_reference():
  labels = np.array([[1.0, 0.0, -1.0], [0.0, -1.0, -1.0]], np.float32)
  logits = np.array([[0.7, -1.2, 50.0], [2.0, -3.0, 8.0]], np.float32)

  value = losses.masked_sigmoid_cross_entropy(tf.constant(labels), tf.constant(logits)).numpy()

  valid = labels >= 0
  probs = 1.0 / (1.0 + np.exp(-logits[valid]))
  per_item = -(labels[valid] * np.log(probs) + (1.0 - labels[valid]) * np.log(1.0 - probs))
  assert value == pytest.approx(per_item.mean(), rel=1e-5)


def test_sigmoid_cross_entropy_without_valid_labels_is_zero():
  labels = _constant([[PADDING_LABEL, PADDING_LABEL]])

  value = losses.masked_sigmoid_cross_entropy(labels, _constant([[1.0, -4.0]]))

  assert value.numpy() == 0.0


# Listwise losses


@pytest.mark.parametrize("name", losses.LISTWISE_LOSSES)
def test_list_without_positive_adds_nothing(name):
  loss = losses.listwise_loss(name)

  both = loss(_constant([LIST_A_LABELS, LIST_B_LABELS]), _constant([LIST_A_LOGITS, LIST_B_LOGITS]))
  only_a = loss(_constant([LIST_A_LABELS]), _constant([LIST_A_LOGITS]))

  assert np.isfinite(both.numpy())
  assert both.numpy() == pytest.approx(only_a.numpy(), rel=1e-6)


@pytest.mark.parametrize("name", losses.LISTWISE_LOSSES)
def test_per_list_loss_without_positive_is_zero(name):
  loss = losses.listwise_loss(name)

  per_list, has_positive = loss.per_list_losses(
    _constant([LIST_A_LABELS, LIST_B_LABELS]), _constant([LIST_A_LOGITS, LIST_B_LOGITS])
  )

  assert per_list.numpy()[1] == 0.0
  assert has_positive.numpy().tolist() == [True, False]


@pytest.mark.parametrize("name", losses.LISTWISE_LOSSES)
def test_padded_items_do_not_change_loss(name):
  loss = losses.listwise_loss(name)
  padded_labels = _pad(LIST_A_LABELS, 6, PADDING_LABEL)
  padded_logits = LIST_A_LOGITS + [5.0, -3.0, 0.0]

  padded = loss(_constant([padded_labels]), _constant([padded_logits]))
  unpadded = loss(_constant([LIST_A_LABELS]), _constant([LIST_A_LOGITS]))

  assert padded.numpy() == pytest.approx(unpadded.numpy(), rel=1e-5)


@pytest.mark.parametrize("name", losses.LISTWISE_LOSSES)
def test_batch_without_positive_is_zero(name):
  loss = losses.listwise_loss(name)
  labels = _constant([LIST_B_LABELS, [PADDING_LABEL] * 3])
  logits = tf.Variable([LIST_B_LOGITS, [0.1, 0.2, 0.3]])

  with tf.GradientTape() as tape:
    value = loss(labels, logits)
  gradient = tape.gradient(value, logits)

  assert value.numpy() == 0.0
  assert np.all(np.isfinite(gradient.numpy()))


@pytest.mark.parametrize("name", losses.LISTWISE_LOSSES)
def test_gradient_is_finite_with_padding(name):
  loss = losses.listwise_loss(name)
  labels = _constant([_pad(LIST_A_LABELS, 5, PADDING_LABEL), _pad(LIST_B_LABELS, 5, PADDING_LABEL)])
  logits = tf.Variable([LIST_A_LOGITS + [9.0, -9.0], LIST_B_LOGITS + [0.0, 0.0]])

  with tf.GradientTape() as tape:
    value = loss(labels, logits)
  gradient = tape.gradient(value, logits).numpy()

  assert np.all(np.isfinite(gradient))
  assert np.any(gradient[0, :3] != 0.0)


def test_softmax_matches_numpy_reference():
  labels = [_pad(LIST_A_LABELS, 4, PADDING_LABEL), [0.0, 1.0, 1.0, 0.0], LIST_B_LABELS + [0.0]]
  logits = [LIST_A_LOGITS + [3.0], [0.2, -0.1, 0.4, 1.5], LIST_B_LOGITS + [0.0]]

  value = losses.listwise_loss("softmax")(_constant(labels), _constant(logits)).numpy()

  expected = (
    _reference_softmax(labels[0], logits[0]) + _reference_softmax(labels[1], logits[1])
  ) / 2
  assert value == pytest.approx(expected, rel=1e-5)


def test_list_mle_matches_numpy_reference():
  labels = [_pad(LIST_A_LABELS, 5, PADDING_LABEL), [3.0, 1.0, 0.0, 2.0, PADDING_LABEL]]
  logits = [LIST_A_LOGITS + [1.0, 2.0], [0.2, -0.1, 0.4, 1.5, -2.0]]

  value = losses.listwise_loss("list_mle")(_constant(labels), _constant(logits)).numpy()

  expected = (
    _reference_list_mle(labels[0], logits[0]) + _reference_list_mle(labels[1], logits[1])
  ) / 2
  assert value == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["softmax", "approx_ndcg"])
def test_matches_tfr_when_every_list_has_one_positive(name):
  labels = _constant([[1.0, 0.0, 0.0, PADDING_LABEL], [0.0, 0.0, 1.0, 0.0]])
  logits = _constant([[0.3, 1.2, -0.5, 2.0], [0.4, 0.1, -0.2, 0.9]])
  tfr_loss = {
    "softmax": tfr.keras.losses.SoftmaxLoss(),
    "approx_ndcg": tfr.keras.losses.ApproxNDCGLoss(),
  }[name]

  value = losses.listwise_loss(name)(labels, logits).numpy()

  assert value == pytest.approx(tfr_loss(labels, logits).numpy(), rel=1e-5)


def test_approx_ndcg_is_negative_ndcg_in_range():
  labels = _constant([LIST_A_LABELS])

  value = losses.listwise_loss("approx_ndcg")(labels, _constant([LIST_A_LOGITS])).numpy()

  assert -1.0 <= value < 0.0


def test_unknown_listwise_loss_raises():
  with pytest.raises(ValueError) as error:
    losses.listwise_loss("pairwise_hinge")

  assert "received 'pairwise_hinge'" in str(error.value)
  assert "softmax" in str(error.value)


def test_listwise_loss_rejects_sample_weight():
  loss = losses.listwise_loss("softmax")

  with pytest.raises(ValueError) as error:
    loss(_constant([LIST_A_LABELS]), _constant([LIST_A_LOGITS]), sample_weight=_constant([[1.0]]))

  assert "sample_weight is not supported" in str(error.value)


def test_listwise_loss_config_round_trip():
  loss = losses.listwise_loss("approx_ndcg")

  restored = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))

  assert isinstance(restored, losses.ListwiseRankingLoss)
  assert restored.ranking_loss == "approx_ndcg"
  assert restored.name == loss.name


# Multi-task loss


def _multi_task_batch():
  labels = {
    "click": _constant([[1.0, 0.0, 1.0, PADDING_LABEL], [0.0, 0.0, 0.0, 0.0]]),
    "cart": _constant([[0.0, 0.0, 1.0, PADDING_LABEL], [0.0, 0.0, 0.0, 0.0]]),
    "purchase": _constant([[0.0, 0.0, 1.0, PADDING_LABEL], [0.0, 0.0, 0.0, 0.0]]),
  }
  rng = np.random.default_rng(4)
  logits = {task: tf.constant(rng.normal(size=(2, 4)).astype(np.float32)) for task in TASKS}
  mask = tf.constant([[True, True, True, False], [True, True, True, True]])
  return labels, logits, mask


def test_multi_task_terms_and_total():
  labels, logits, mask = _multi_task_batch()
  loss = losses.MultiTaskRankingLoss(
    TASKS,
    listwise_loss="softmax",
    task_weights=[1.0, 2.0, 3.0],
    pointwise_weight=0.5,
    dpr_weight=4.0,
  )

  terms = {name: value.numpy() for name, value in loss(labels, logits, mask).items()}

  assert list(terms) == [
    "loss",
    "loss/click",
    "pointwise/click",
    "loss/cart",
    "pointwise/cart",
    "loss/purchase",
    "pointwise/purchase",
    "dpr",
  ]
  ranking = losses.listwise_loss("softmax")
  for task in TASKS:
    assert terms[f"loss/{task}"] == pytest.approx(ranking(labels[task], logits[task]).numpy())
    assert terms[f"pointwise/{task}"] == pytest.approx(
      losses.masked_sigmoid_cross_entropy(labels[task], logits[task]).numpy()
    )
  probs = [tf.sigmoid(logits[task]) for task in TASKS]
  assert terms["dpr"] == pytest.approx(losses.dpr_loss(probs, mask).numpy())
  expected_total = (
    sum(weight * terms[f"loss/{task}"] for weight, task in zip([1.0, 2.0, 3.0], TASKS))
    + 0.5 * sum(terms[f"pointwise/{task}"] for task in TASKS)
    + 4.0 * terms["dpr"]
  )
  assert terms["loss"] == pytest.approx(expected_total, rel=1e-5)


def test_multi_task_task_weights_as_dict_or_list():
  labels, logits, mask = _multi_task_batch()
  by_list = losses.MultiTaskRankingLoss(TASKS, task_weights=[0.5, 1.0, 2.0])
  by_dict = losses.MultiTaskRankingLoss(
    TASKS, task_weights={"purchase": 2.0, "click": 0.5, "cart": 1.0}
  )

  assert by_list.task_weights == by_dict.task_weights
  assert by_list(labels, logits, mask)["loss"].numpy() == pytest.approx(
    by_dict(labels, logits, mask)["loss"].numpy()
  )


def test_multi_task_missing_task_labels_are_masked():
  labels, logits, mask = _multi_task_batch()
  labels["purchase"] = tf.fill([2, 4], float(PADDING_LABEL))
  loss = losses.MultiTaskRankingLoss(TASKS)

  terms = loss(labels, logits, mask)

  assert terms["loss/purchase"].numpy() == 0.0
  assert terms["pointwise/purchase"].numpy() == 0.0
  probs = [tf.sigmoid(logits[task]) for task in TASKS]
  expected_dpr = losses.dpr_loss(probs[:2], mask).numpy()
  assert terms["dpr"].numpy() == pytest.approx(expected_dpr)
  assert all(np.isfinite(value.numpy()) for value in terms.values())


def test_multi_task_zero_dpr_weight_still_reports_dpr():
  labels, logits, mask = _multi_task_batch()
  with_dpr = losses.MultiTaskRankingLoss(TASKS, dpr_weight=1.0)(labels, logits, mask)
  without_dpr = losses.MultiTaskRankingLoss(TASKS, dpr_weight=0.0)(labels, logits, mask)

  assert without_dpr["dpr"].numpy() == pytest.approx(with_dpr["dpr"].numpy())
  assert with_dpr["loss"].numpy() - without_dpr["loss"].numpy() == pytest.approx(
    with_dpr["dpr"].numpy(), rel=1e-5
  )


def test_multi_task_config():
  loss = losses.MultiTaskRankingLoss(TASKS, listwise_loss="list_mle", dpr_weight=0.3)

  config = loss.get_config()

  assert config == {
    "task_names": TASKS,
    "listwise_loss": "list_mle",
    "task_weights": [1.0, 1.0, 1.0],
    "pointwise_weight": 0.1,
    "dpr_weight": 0.3,
  }


def test_multi_task_missing_logits_raises():
  labels, logits, mask = _multi_task_batch()
  del logits["cart"]
  loss = losses.MultiTaskRankingLoss(TASKS)

  with pytest.raises(ValueError) as error:
    loss(labels, logits, mask)

  assert "logits has no entry for tasks ['cart']" in str(error.value)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"task_names": []}, "task_names must be a non-empty list"),
    ({"task_names": ["click", "click"]}, "task names must be unique"),
    ({"task_names": TASKS, "task_weights": [1.0]}, "received [1.0]"),
    ({"task_names": TASKS, "task_weights": {"click": 1.0}}, "missing tasks: ['cart', 'purchase']"),
    ({"task_names": TASKS, "task_weights": [1.0, -1.0, 1.0]}, "task_weights must be >= 0"),
    ({"task_names": TASKS, "dpr_weight": -0.1}, "dpr_weight must be >= 0, received -0.1"),
    ({"task_names": TASKS, "listwise_loss": "ndcg"}, "received 'ndcg'"),
  ],
)
def test_multi_task_invalid_argument_raises(kwargs, message):
  with pytest.raises(ValueError) as error:
    losses.MultiTaskRankingLoss(**kwargs)

  assert message in str(error.value)


def test_padding_label_is_minus_one():
  assert PADDING_LABEL == -1
