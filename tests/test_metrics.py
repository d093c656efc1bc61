"""Tests for seqmd_tf.metrics against plain-Python references and hand-checked lists."""

import json
import math

import numpy as np
import pytest

from seqmd_tf import metrics

LOG2_3 = math.log2(3.0)


# Plain-Python references, written without numpy so they share no code with the library.


def ref_ranked_labels(labels_row, scores_row, mask_row):
    """Labels of the valid items, sorted by descending score, ties by stored position."""
    items = [
        position
        for position in range(len(labels_row))
        if mask_row[position] and labels_row[position] >= 0
    ]
    items.sort(key=lambda position: (-scores_row[position], position))
    return [labels_row[position] for position in items]


def ref_dcg(ranked_labels, k):
    total = 0.0
    for index, label in enumerate(ranked_labels[:k]):
        rank = index + 1
        total += (2.0**label - 1.0) / math.log2(rank + 1)
    return total


def ref_ndcg_list(labels_row, scores_row, mask_row, k):
    ranked = ref_ranked_labels(labels_row, scores_row, mask_row)
    if not any(label > 0 for label in ranked):
        return None
    cutoff = len(labels_row) if k is None else k
    ideal = sorted(ranked, reverse=True)
    return ref_dcg(ranked, cutoff) / ref_dcg(ideal, cutoff)


def ref_reciprocal_rank_list(labels_row, scores_row, mask_row):
    ranked = ref_ranked_labels(labels_row, scores_row, mask_row)
    for index, label in enumerate(ranked):
        if label > 0:
            return 1.0 / (index + 1)
    return None


def ref_mean(per_list):
    values = [value for value in per_list if value is not None]
    if not values:
        return None, 0
    return sum(values) / len(values), len(values)


def ref_ndcg(labels, scores, mask, k=None):
    return ref_mean(
        [ref_ndcg_list(l, s, m, k) for l, s, m in zip(labels, scores, mask)]
    )


def ref_mrr(labels, scores, mask):
    return ref_mean(
        [ref_reciprocal_rank_list(l, s, m) for l, s, m in zip(labels, scores, mask)]
    )


def ref_auc(labels, scores, mask):
    """Share of (positive, negative) pairs ordered correctly, ties counting one half."""
    positives = []
    negatives = []
    for labels_row, scores_row, mask_row in zip(labels, scores, mask):
        for label, score, valid in zip(labels_row, scores_row, mask_row):
            if not valid or label < 0:
                continue
            (positives if label > 0 else negatives).append(score)
    if not positives or not negatives:
        return None
    correct = 0.0
    for positive in positives:
        for negative in negatives:
            if positive > negative:
                correct += 1.0
            elif positive == negative:
                correct += 0.5
    return correct / (len(positives) * len(negatives))


def ref_dpr(probs, mask):
    violations = 0
    valid_items = 0
    for list_index, mask_row in enumerate(mask):
        for position, valid in enumerate(mask_row):
            if not valid:
                continue
            valid_items += 1
            funnel = [task_probs[list_index][position] for task_probs in probs]
            if any(funnel[t] > funnel[t - 1] for t in range(1, len(funnel))):
                violations += 1
    return violations / valid_items


def ref_sigmoid(value):
    return 1.0 / (1.0 + math.exp(-value))


def ref_task_metrics(labels, scores, mask):
    return {
        "ndcg@5": ref_ndcg(labels, scores, mask, 5)[0],
        "ndcg@10": ref_ndcg(labels, scores, mask, 10)[0],
        "ndcg": ref_ndcg(labels, scores, mask)[0],
        "mrr": ref_mrr(labels, scores, mask)[0],
        "auc": ref_auc(labels, scores, mask),
        "lists": ref_ndcg(labels, scores, mask)[1],
    }


def assert_metrics_close(actual, expected):
    assert set(actual) == set(expected)
    for name, expected_value in expected.items():
        if expected_value is None:
            assert actual[name] is None or math.isnan(actual[name]), name
        else:
            assert actual[name] == pytest.approx(expected_value, abs=1e-12), name


def random_lists(seed, num_lists=40, list_size=7):
    """Random lists with integer scores (many ties), graded labels, padding and -1 labels."""
    rng = np.random.default_rng(seed)
    mask = rng.random((num_lists, list_size)) < 0.8
    labels = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 2.0], size=(num_lists, list_size))
    labels = np.where(mask, labels, -1.0)
    scores = rng.integers(0, 4, size=(num_lists, list_size)).astype(np.float64)
    return labels, scores, mask


def as_lists(*arrays):
    return [np.asarray(array).tolist() for array in arrays]


# Hand-checked lists.


def test_ndcg_positive_second():
    labels = np.array([[0.0, 1.0, 0.0]])
    scores = np.array([[3.0, 2.0, 1.0]])
    mask = np.ones((1, 3), dtype=bool)

    value, lists = metrics.ndcg_at_k(labels, scores, mask)

    assert value == pytest.approx(1.0 / LOG2_3)
    assert lists == 1


def test_ndcg_graded_labels():
    labels = np.array([[2.0, 0.0, 1.0]])
    scores = np.array([[1.0, 3.0, 2.0]])
    mask = np.ones((1, 3), dtype=bool)
    # Ranked labels 0, 1, 2 against the ideal 2, 1, 0.
    dcg = 0.0 + 1.0 / LOG2_3 + 3.0 / 2.0
    ideal_dcg = 3.0 + 1.0 / LOG2_3

    full, _ = metrics.ndcg_at_k(labels, scores, mask)
    top_one, _ = metrics.ndcg_at_k(labels, scores, mask, k=1)
    top_two, _ = metrics.ndcg_at_k(labels, scores, mask, k=2)

    assert full == pytest.approx(dcg / ideal_dcg)
    assert top_one == pytest.approx(0.0)
    assert top_two == pytest.approx((1.0 / LOG2_3) / ideal_dcg)


def test_ndcg_k_larger_than_list():
    labels = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    scores = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    mask = np.ones((2, 3), dtype=bool)

    whole, whole_lists = metrics.ndcg_at_k(labels, scores, mask)
    at_ten, ten_lists = metrics.ndcg_at_k(labels, scores, mask, k=10)

    assert at_ten == pytest.approx(whole)
    assert ten_lists == whole_lists == 2
    second = (1.0 + 1.0 / 2.0) / (1.0 + 1.0 / LOG2_3)
    assert at_ten == pytest.approx((1.0 / LOG2_3 + second) / 2.0)


def test_ties_keep_stored_order():
    # Items 1 and 2 tie at the top, so item 1 (a negative) stays first.
    labels = np.array([[0.0, 0.0, 1.0, 0.0]])
    scores = np.array([[2.0, 5.0, 5.0, 1.0]])
    mask = np.ones((1, 4), dtype=bool)

    reciprocal_rank, _ = metrics.mrr(labels, scores, mask)
    ndcg, _ = metrics.ndcg_at_k(labels, scores, mask)

    assert reciprocal_rank == pytest.approx(0.5)
    assert ndcg == pytest.approx(1.0 / LOG2_3)


def test_all_scores_tied_is_stored_order():
    labels = np.array([[0.0, 0.0, 1.0]])
    mask = np.ones((1, 3), dtype=bool)

    tied, _ = metrics.mrr(labels, np.zeros((1, 3)), mask)
    original, _ = metrics.mrr(labels, metrics.original_order_scores(mask), mask)

    assert tied == pytest.approx(1.0 / 3.0)
    assert original == pytest.approx(1.0 / 3.0)


def test_padding_takes_no_rank():
    # The padded item has the highest score but must not push the positive down.
    labels = np.array([[0.0, -1.0, 1.0]])
    scores = np.array([[1.0, 9.0, 2.0]])
    mask = np.array([[True, False, True]])

    reciprocal_rank, _ = metrics.mrr(labels, scores, mask)
    ndcg, _ = metrics.ndcg_at_k(labels, scores, mask, k=1)

    assert reciprocal_rank == pytest.approx(1.0)
    assert ndcg == pytest.approx(1.0)


def test_missing_label_on_valid_item_ignored():
    # Item 0 exists (mask True) but has no label for this task, so it takes no rank.
    labels = np.array([[-1.0, 0.0, 1.0]])
    scores = np.array([[9.0, 2.0, 5.0]])
    mask = np.ones((1, 3), dtype=bool)

    reciprocal_rank, _ = metrics.mrr(labels, scores, mask)

    assert reciprocal_rank == pytest.approx(1.0)


def test_masked_positive_is_not_counted():
    labels = np.array([[0.0, 1.0, 0.0]])
    scores = np.array([[1.0, 2.0, 3.0]])
    mask = np.array([[True, False, True]])

    ndcg, lists = metrics.ndcg_at_k(labels, scores, mask)
    reciprocal_rank, mrr_lists = metrics.mrr(labels, scores, mask)

    assert math.isnan(ndcg)
    assert lists == 0
    assert math.isnan(reciprocal_rank)
    assert mrr_lists == 0


def test_lists_without_positive_excluded():
    labels = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    mask = np.array([[True, True], [True, True], [False, False]])

    ndcg, lists = metrics.ndcg_at_k(labels, scores, mask)
    per_list = metrics.ndcg_per_list(labels, scores, mask)

    assert ndcg == pytest.approx(1.0)
    assert lists == 1
    assert per_list[0] == pytest.approx(1.0)
    assert math.isnan(per_list[1])
    assert math.isnan(per_list[2])


def test_infinite_scores_rank_correctly():
    labels = np.array([[0.0, 1.0, 0.0]])
    scores = np.array([[-np.inf, np.inf, 0.0]])
    mask = np.ones((1, 3), dtype=bool)

    reciprocal_rank, _ = metrics.mrr(labels, scores, mask)

    assert reciprocal_rank == pytest.approx(1.0)


def test_auc_hand_checked_with_tie():
    # Positives 0.8, 0.5 and negatives 0.5, 0.1: pairs 1 + 1 + 0.5 + 1 = 3.5 of 4.
    labels = np.array([[1.0, 0.0], [1.0, 0.0]])
    scores = np.array([[0.8, 0.5], [0.5, 0.1]])
    mask = np.ones((2, 2), dtype=bool)

    assert metrics.auc(labels, scores, mask) == pytest.approx(0.875)


def test_auc_pools_lists_and_skips_padding():
    labels = np.array([[1.0, -1.0], [0.0, 1.0]])
    scores = np.array([[0.2, 0.9], [0.3, 0.1]])
    mask = np.array([[True, False], [True, True]])

    # Positives 0.2, 0.1 both below the negative 0.3; the padded 0.9 does not count.
    assert metrics.auc(labels, scores, mask) == pytest.approx(0.0)


def test_auc_graded_labels_are_positive():
    labels = np.array([[2.0, 1.0, 0.0]])
    scores = np.array([[0.1, 0.9, 0.5]])
    mask = np.ones((1, 3), dtype=bool)

    assert metrics.auc(labels, scores, mask) == pytest.approx(0.5)


def test_auc_one_class_is_nan():
    mask = np.ones((1, 3), dtype=bool)
    scores = np.array([[0.1, 0.2, 0.3]])

    assert math.isnan(metrics.auc(np.zeros((1, 3)), scores, mask))
    assert math.isnan(metrics.auc(np.ones((1, 3)), scores, mask))
    assert math.isnan(metrics.auc(-np.ones((1, 3)), scores, mask))


def test_auc_all_tied_is_half():
    labels = np.array([[1.0, 0.0, 0.0, 1.0]])
    mask = np.ones((1, 4), dtype=bool)

    assert metrics.auc(labels, np.zeros((1, 4)), mask) == pytest.approx(0.5)


def test_auc_infinite_ties_count_half():
    labels = np.array([[1.0, 0.0]])
    scores = np.array([[np.inf, np.inf]])
    mask = np.ones((1, 2), dtype=bool)

    assert metrics.auc(labels, scores, mask) == pytest.approx(0.5)


def test_auc_logits_equal_sigmoid_probs():
    labels, logits, mask = random_lists(seed=3)
    logits = logits + np.random.default_rng(4).normal(size=logits.shape)

    from_logits = metrics.auc(labels, logits, mask)
    from_probs = metrics.auc(labels, metrics.sigmoid(logits), mask)

    assert from_logits == pytest.approx(from_probs, abs=1e-12)


def test_auc_original_order_uses_position():
    # -position scores: position 0 beats position 1 in every list, ties across lists.
    labels = np.array([[1.0, 0.0], [0.0, 1.0]])
    mask = np.ones((2, 2), dtype=bool)

    value = metrics.auc(labels, metrics.original_order_scores(mask), mask)

    # Pairs (pos at 0, neg at 0) 0.5, (pos at 0, neg at 1) 1, (pos at 1, neg at 0) 0,
    # (pos at 1, neg at 1) 0.5.
    assert value == pytest.approx(0.5)


def test_dpr_violation_hand_checked():
    click = np.array([[0.5, 0.2, 0.3]])
    cart = np.array([[0.4, 0.3, 0.3]])
    purchase = np.array([[0.1, 0.1, 0.3]])
    mask = np.ones((1, 3), dtype=bool)

    # Item 1 violates because cart is above click. Item 2 has equal probabilities, which
    # is no violation.
    assert metrics.dpr_violation_rate([click, cart, purchase], mask) == pytest.approx(
        1.0 / 3.0
    )


def test_dpr_violation_late_step_counts():
    click = np.array([[0.5]])
    cart = np.array([[0.4]])
    purchase = np.array([[0.45]])
    mask = np.ones((1, 1), dtype=bool)

    assert metrics.dpr_violation_rate([click, cart, purchase], mask) == pytest.approx(
        1.0
    )


def test_dpr_violation_skips_padding():
    click = np.array([[0.5, 0.1]])
    purchase = np.array([[0.1, 0.9]])
    mask = np.array([[True, False]])

    assert metrics.dpr_violation_rate([click, purchase], mask) == pytest.approx(0.0)


def test_dpr_violation_undefined_cases():
    probs = np.array([[0.5]])

    assert math.isnan(metrics.dpr_violation_rate([probs], np.ones((1, 1), dtype=bool)))
    assert math.isnan(
        metrics.dpr_violation_rate([probs, probs], np.zeros((1, 1), dtype=bool))
    )


def test_original_order_scores_values():
    mask = np.array([[True, True, False], [True, False, False]])

    scores = metrics.original_order_scores(mask)

    assert scores.shape == (2, 3)
    assert scores.tolist() == [[0.0, -1.0, -2.0], [0.0, -1.0, -2.0]]


def test_sigmoid_matches_reference():
    logits = np.array([-800.0, -3.0, 0.0, 2.5, 800.0])

    probs = metrics.sigmoid(logits)

    for logit, prob in zip(logits[1:-1], probs[1:-1]):
        assert prob == pytest.approx(ref_sigmoid(logit))
    assert probs[0] == pytest.approx(0.0)
    assert probs[-1] == pytest.approx(1.0)


# Random lists against the references.


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 5, 10, None])
def test_ndcg_matches_reference(seed, k):
    labels, scores, mask = random_lists(seed)
    expected, expected_lists = ref_ndcg(*as_lists(labels, scores, mask), k=k)

    value, lists = metrics.ndcg_at_k(labels, scores, mask, k=k)

    assert lists == expected_lists
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndcg_per_list_matches_reference(seed):
    labels, scores, mask = random_lists(seed)
    expected = [
        ref_ndcg_list(l, s, m, 5) for l, s, m in zip(*as_lists(labels, scores, mask))
    ]

    per_list = metrics.ndcg_per_list(labels, scores, mask, k=5)

    for index, expected_value in enumerate(expected):
        if expected_value is None:
            assert math.isnan(per_list[index]), index
        else:
            assert per_list[index] == pytest.approx(expected_value, abs=1e-12), index


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mrr_matches_reference(seed):
    labels, scores, mask = random_lists(seed)
    expected, expected_lists = ref_mrr(*as_lists(labels, scores, mask))

    value, lists = metrics.mrr(labels, scores, mask)

    assert lists == expected_lists
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_reference(seed):
    labels, scores, mask = random_lists(seed)

    value = metrics.auc(labels, scores, mask)

    assert value == pytest.approx(ref_auc(*as_lists(labels, scores, mask)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpr_matches_reference(seed):
    rng = np.random.default_rng(seed)
    # Probabilities on a coarse grid so equal neighbours (no violation) occur.
    probs = [rng.integers(0, 5, size=(30, 6)) / 4.0 for _ in range(3)]
    mask = rng.random((30, 6)) < 0.7

    value = metrics.dpr_violation_rate(probs, mask)

    assert value == pytest.approx(ref_dpr(as_lists(*probs), mask.tolist()))


@pytest.mark.parametrize("seed", [0, 1])
def test_task_metrics_matches_reference(seed):
    labels, scores, mask = random_lists(seed)

    result = metrics.task_metrics(labels, scores, mask)

    assert list(result) == list(metrics.METRIC_NAMES)
    assert_metrics_close(result, ref_task_metrics(*as_lists(labels, scores, mask)))


def test_task_metrics_no_positive_is_nan():
    labels = np.zeros((2, 3))
    mask = np.ones((2, 3), dtype=bool)

    result = metrics.task_metrics(labels, np.zeros((2, 3)), mask)

    assert result["lists"] == 0
    for name in ("ndcg@5", "ndcg@10", "ndcg", "mrr", "auc"):
        assert math.isnan(result[name]), name


# Input checks.


def test_shape_mismatch_names_argument():
    with pytest.raises(
        ValueError, match=r"scores has shape \(2, 4\) but mask has shape \(2, 3\)"
    ):
        metrics.ndcg_at_k(
            np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), dtype=bool)
        )


def test_one_dimensional_labels_rejected():
    with pytest.raises(
        ValueError, match=r"labels must have shape \[num_lists, list_size\]"
    ):
        metrics.mrr(np.zeros(3), np.zeros(3), np.ones(3, dtype=bool))


def test_nan_score_rejected_with_position():
    scores = np.array([[0.0, np.nan]])
    with pytest.raises(ValueError, match=r"NaN .* list 0, position 1"):
        metrics.auc(np.array([[0.0, 1.0]]), scores, np.ones((1, 2), dtype=bool))


def test_nan_score_on_padding_allowed():
    scores = np.array([[1.0, np.nan]])
    labels = np.array([[1.0, -1.0]])

    value, _ = metrics.ndcg_at_k(labels, scores, np.array([[True, False]]))

    assert value == pytest.approx(1.0)


@pytest.mark.parametrize(
    "k, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_invalid_cutoff_rejected(k, error):
    with pytest.raises(error, match="k must be an int >= 1 or None"):
        metrics.ndcg_at_k(
            np.ones((1, 2)), np.zeros((1, 2)), np.ones((1, 2), dtype=bool), k=k
        )


# evaluate_lists.


def make_dataset():
    """Eight lists of four items: regions US x3, DE x3, FR x1, IT x1."""
    labels, scores, mask = random_lists(seed=7, num_lists=8, list_size=4)
    rng = np.random.default_rng(8)
    labels = {
        "click": np.where(mask, rng.choice([0.0, 1.0], size=mask.shape), -1.0),
        "purchase": labels,
    }
    # Click has no labels at all on the last list, as when a source lacks a task there.
    labels["click"][-1] = -1.0
    model_scores = {
        "click": rng.normal(size=mask.shape),
        "purchase": scores + rng.normal(size=mask.shape),
    }
    serving_score = rng.normal(size=mask.shape)
    regions = np.array(["US", "US", "US", "DE", "DE", "DE", "FR", "IT"])
    return labels, model_scores, serving_score, mask, regions


def test_evaluate_lists_overall_matches_reference():
    labels, model_scores, serving_score, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=3
    )

    original = metrics.original_order_scores(mask)
    for task in ("click", "purchase"):
        task_result = result["overall"][task]
        assert set(task_result) == {"model", "model_score", "original"}
        assert_metrics_close(
            task_result["model"],
            ref_task_metrics(*as_lists(labels[task], model_scores[task], mask)),
        )
        assert_metrics_close(
            task_result["model_score"],
            ref_task_metrics(*as_lists(labels[task], serving_score, mask)),
        )
        assert_metrics_close(
            task_result["original"],
            ref_task_metrics(*as_lists(labels[task], original, mask)),
        )


def test_evaluate_lists_header_fields():
    labels, model_scores, serving_score, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=3
    )

    assert result["tasks"] == ["click", "purchase"]
    assert result["num_lists"] == 8
    assert result["num_items"] == int(mask.sum())
    assert result["min_region_lists"] == 3
    assert set(result["scorers"]) == {"model", "model_score", "original"}


def test_evaluate_lists_pools_small_regions():
    labels, model_scores, serving_score, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=3
    )

    assert list(result["regions"]) == ["DE", "US", "other"]
    assert result["pooled_regions"] == ["FR", "IT"]
    assert result["regions"]["US"]["lists"] == 3
    assert result["regions"]["DE"]["lists"] == 3
    assert result["regions"]["other"]["lists"] == 2

    pooled = [6, 7]
    for task in ("click", "purchase"):
        expected = ref_task_metrics(
            *as_lists(labels[task][pooled], model_scores[task][pooled], mask[pooled])
        )
        assert_metrics_close(result["regions"]["other"][task]["model"], expected)


def test_evaluate_lists_region_matches_reference():
    labels, model_scores, serving_score, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=3
    )

    us_lists = [0, 1, 2]
    original = metrics.original_order_scores(mask)
    expected_model = ref_task_metrics(
        *as_lists(
            labels["purchase"][us_lists],
            model_scores["purchase"][us_lists],
            mask[us_lists],
        )
    )
    expected_original = ref_task_metrics(
        *as_lists(labels["purchase"][us_lists], original[us_lists], mask[us_lists])
    )
    assert_metrics_close(result["regions"]["US"]["purchase"]["model"], expected_model)
    assert_metrics_close(
        result["regions"]["US"]["purchase"]["original"], expected_original
    )


def test_evaluate_lists_dpr_rates():
    labels, model_scores, serving_score, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=3
    )

    probs = [
        [[ref_sigmoid(value) for value in row] for row in model_scores[task].tolist()]
        for task in ("click", "purchase")
    ]
    assert result["dpr_violation_rate"] == pytest.approx(ref_dpr(probs, mask.tolist()))
    us_probs = [task_probs[:3] for task_probs in probs]
    assert result["regions"]["US"]["dpr_violation_rate"] == pytest.approx(
        ref_dpr(us_probs, mask[:3].tolist())
    )


def test_evaluate_lists_no_other_when_all_large():
    labels, model_scores, serving_score, mask, _ = make_dataset()
    regions = np.array(["US"] * 4 + ["DE"] * 4)

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=4
    )

    assert list(result["regions"]) == ["DE", "US"]
    assert result["pooled_regions"] == []


def test_evaluate_lists_region_named_other_merges():
    labels, model_scores, serving_score, mask, _ = make_dataset()
    regions = np.array(["US"] * 4 + ["other"] * 3 + ["FR"])

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=2
    )

    assert list(result["regions"]) == ["US", "other"]
    assert result["regions"]["other"]["lists"] == 4
    assert result["pooled_regions"] == ["FR", "other"]


def test_evaluate_lists_decodes_byte_regions():
    labels, model_scores, serving_score, mask, _ = make_dataset()
    regions = np.array([b"US"] * 4 + [b"DE"] * 4, dtype=object)

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=4
    )

    assert set(result["regions"]) == {"US", "DE"}


def test_evaluate_lists_without_serving_score():
    labels, model_scores, _, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, None, mask, regions, min_region_lists=3
    )

    assert set(result["overall"]["click"]) == {"model", "original"}
    assert set(result["regions"]["US"]["click"]) == {"model", "original"}
    assert "model_score" not in result["scorers"]


def test_evaluate_lists_ranks_task_by_own_logits():
    # Each task's logits rank its own positive first, but the serving score (equal to the
    # click logits) ranks the purchase positive last.
    mask = np.ones((1, 3), dtype=bool)
    labels = {
        "click": np.array([[0.0, 0.0, 1.0]]),
        "purchase": np.array([[1.0, 0.0, 0.0]]),
    }
    model_scores = {
        "click": np.array([[0.0, 1.0, 2.0]]),
        "purchase": np.array([[2.0, 1.0, 0.0]]),
    }
    serving_score = np.array([[0.0, 1.0, 2.0]])

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, ["US"], 1
    )

    assert result["overall"]["click"]["model"]["mrr"] == pytest.approx(1.0)
    assert result["overall"]["purchase"]["model"]["mrr"] == pytest.approx(1.0)
    assert result["overall"]["purchase"]["model_score"]["mrr"] == pytest.approx(
        1.0 / 3.0
    )
    assert result["overall"]["click"]["original"]["mrr"] == pytest.approx(1.0 / 3.0)


def test_evaluate_lists_nan_becomes_null():
    mask = np.ones((2, 2), dtype=bool)
    labels = {"click": np.array([[1.0, 0.0], [0.0, 0.0]]), "purchase": -np.ones((2, 2))}
    model_scores = {"click": np.zeros((2, 2)), "purchase": np.zeros((2, 2))}

    result = metrics.evaluate_lists(labels, model_scores, None, mask, ["US", "US"], 1)

    purchase = result["overall"]["purchase"]["model"]
    assert purchase["lists"] == 0
    assert purchase["ndcg@10"] is None
    assert purchase["mrr"] is None
    assert purchase["auc"] is None
    assert result["overall"]["click"]["model"]["lists"] == 1
    json.dumps(result, allow_nan=False)


def test_evaluate_lists_result_types_are_plain():
    labels, model_scores, serving_score, mask, regions = make_dataset()

    result = metrics.evaluate_lists(
        labels, model_scores, serving_score, mask, regions, min_region_lists=3
    )

    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert type(result["num_items"]) is int
    assert type(result["regions"]["US"]["lists"]) is int


def test_evaluate_lists_task_mismatch_rejected():
    labels, model_scores, serving_score, mask, regions = make_dataset()
    del labels["purchase"]

    with pytest.raises(
        ValueError, match=r"same tasks.*\['click'\].*\['click', 'purchase'\]"
    ):
        metrics.evaluate_lists(labels, model_scores, serving_score, mask, regions)


def test_evaluate_lists_reserved_task_rejected():
    mask = np.ones((1, 2), dtype=bool)
    labels = {"lists": np.zeros((1, 2))}
    model_scores = {"lists": np.zeros((1, 2))}

    with pytest.raises(ValueError, match=r"task names \['lists'\] are reserved"):
        metrics.evaluate_lists(labels, model_scores, None, mask, ["US"])


def test_evaluate_lists_region_shape_rejected():
    labels, model_scores, serving_score, mask, _ = make_dataset()

    with pytest.raises(
        ValueError, match=r"regions must have shape \[num_lists\] = \(8,\)"
    ):
        metrics.evaluate_lists(labels, model_scores, serving_score, mask, ["US"] * 7)


def test_evaluate_lists_serving_shape_rejected():
    labels, model_scores, _, mask, regions = make_dataset()

    with pytest.raises(ValueError, match="serving_score has shape"):
        metrics.evaluate_lists(labels, model_scores, np.zeros((8, 3)), mask, regions)


@pytest.mark.parametrize("min_region_lists, error", [(0, ValueError), (2.5, TypeError)])
def test_evaluate_lists_min_region_rejected(min_region_lists, error):
    labels, model_scores, serving_score, mask, regions = make_dataset()

    with pytest.raises(error, match="min_region_lists must be an int >= 1"):
        metrics.evaluate_lists(
            labels, model_scores, serving_score, mask, regions, min_region_lists
        )
