"""Offline ranking metrics in numpy: NDCG, MRR, AUC and the DPR violation rate.

Every function takes whole-evaluation-set arrays, so results are exact (no streaming
approximation) and need no TensorFlow. The arrays are:

- `labels`: `[num_lists, list_size]` float. A label below 0 marks padding or a missing
  label (the input pipeline pads with -1), and such items are left out of every metric.
  A label above 0 is a positive, and graded labels give NDCG gain `2**label - 1`.
- `scores`: `[num_lists, list_size]` float, higher is ranked earlier. Ties keep the stored
  order of the list (a stable sort on `-score`), so equal scores never reshuffle a list.
- `mask`: `[num_lists, list_size]` bool, True for items that exist in the list.

Ranking metrics (NDCG, MRR) average over the lists that contain at least one positive
for the task. AUC pools all valid items of all lists.
"""

import itertools
import math

import numpy as np

# Labels below this value mark padding (the input pipeline pads with -1) or a task that
# the dataset does not record for an item.
MIN_VALID_LABEL = 0.0

# The stored list order is the reference every re-ranker has to beat.
ORIGINAL_ORDER = "original"
# Ranking by the logit of the task being evaluated.
MODEL = "model"
# Ranking by the single serving `score` of the SavedModel.
MODEL_SCORE = "model_score"
# Regions with fewer evaluation lists than `min_region_lists` are pooled under this name.
OTHER_REGION = "other"

# Keys of the dict that `task_metrics` returns, in report order.
NDCG_CUTOFFS = (5, 10)
METRIC_NAMES = ("ndcg@5", "ndcg@10", "ndcg", "mrr", "auc", "lists")

SCORER_DESCRIPTIONS = {
    MODEL: "each task's own logit ranks the list for that task",
    MODEL_SCORE: "the serving score (one score for all tasks) ranks the list",
    ORIGINAL_ORDER: "the stored order of the list (what production showed)",
}

# Keys that every per-region entry of `evaluate_lists` contains beside the task names.
_REGION_KEYS = ("lists", "dpr_violation_rate")


def _check_same_shape(name, array, reference_name, reference):
    if array.ndim != 2:
        raise ValueError(
            f"{name} must have shape [num_lists, list_size], got shape {array.shape}. "
            "Pass one row per list."
        )
    if array.shape != reference.shape:
        raise ValueError(
            f"{name} has shape {array.shape} but {reference_name} has shape "
            f"{reference.shape}. Both must be [num_lists, list_size] for the same lists."
        )


def _as_inputs(labels, scores, mask):
    """Validate one task's arrays and return labels, scores and the valid-item mask.

    Labels and scores come back as float64. The `[num_lists, list_size]` bool mask marks
    items that exist and have a label of 0 or more.
    """
    mask = np.asarray(mask, dtype=bool)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    _check_same_shape("labels", labels, "mask", mask)
    _check_same_shape("scores", scores, "mask", mask)

    valid = mask & (labels >= MIN_VALID_LABEL)
    nan_items = np.argwhere(np.isnan(scores) & valid)
    if nan_items.size:
        list_index, position = nan_items[0]
        raise ValueError(
            f"scores contain NaN for {len(nan_items)} valid item(s), first at list "
            f"{list_index}, position {position}. Check the model output for NaN logits."
        )
    nan_labels = np.argwhere(np.isnan(labels) & mask)
    if nan_labels.size:
        list_index, position = nan_labels[0]
        raise ValueError(
            f"labels contain NaN at list {list_index}, position {position}. "
            "Use -1 for a missing label."
        )
    return labels, scores, valid


def _ranking_order(scores, valid):
    """Return `[num_lists, list_size]` int indices that put each list in ranked order.

    Valid items come first, by descending score, and ties keep their stored position.
    """
    positions = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    # np.lexsort uses the last key as the primary key.
    return np.lexsort((positions, -scores, ~valid), axis=-1)


def _check_cutoff(k):
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int >= 1 or None, got {k!r}.")
    if k < 1:
        raise ValueError(f"k must be an int >= 1 or None, got {k!r}.")


def _ranked_gains(labels, scores, valid):
    """Return the NDCG gains in ranked order and in ideal order.

    Both are `[num_lists, list_size]` float64 with gain `2**label - 1` for valid items and
    0 for the others. A gain is above 0 exactly when the item is a valid positive.
    """
    safe_labels = np.where(valid, labels, 0.0)
    gains = np.where(valid, np.power(2.0, safe_labels) - 1.0, 0.0)
    order = _ranking_order(scores, valid)
    ranked_gains = np.take_along_axis(gains, order, axis=-1)
    ideal_gains = -np.sort(-gains, axis=-1)
    return ranked_gains, ideal_gains


def _ndcg_from_gains(ranked_gains, ideal_gains, k):
    list_size = ranked_gains.shape[1]
    cutoff = list_size if k is None else min(int(k), list_size)
    discounts = 1.0 / np.log2(np.arange(2, cutoff + 2))
    dcg = ranked_gains[:, :cutoff] @ discounts
    ideal_dcg = ideal_gains[:, :cutoff] @ discounts

    # The ideal order puts every positive first, so ideal_dcg > 0 exactly when the list
    # has a positive.
    has_positive = ideal_gains[:, 0] > 0
    safe_ideal_dcg = np.where(has_positive, ideal_dcg, 1.0)
    return np.where(has_positive, dcg / safe_ideal_dcg, np.nan)


def _reciprocal_rank_from_gains(ranked_gains):
    ranked_positive = ranked_gains > 0
    first_positive_rank = np.argmax(ranked_positive, axis=-1) + 1
    has_positive = np.any(ranked_positive, axis=-1)
    return np.where(has_positive, 1.0 / first_positive_rank, np.nan)


def ndcg_per_list(labels, scores, mask, k=None):
    """Compute NDCG@k of every list.

    DCG@k = sum over ranks r <= k of (2**label - 1) / log2(r + 1), and NDCG@k divides it by
    the DCG@k of the ideal order (labels sorted descending). `k=None` or a `k` larger
    than the list uses the whole list.

    Args:
      labels: `[num_lists, list_size]` float, below 0 for padding or a missing label.
      scores: `[num_lists, list_size]` float, higher ranks earlier.
      mask: `[num_lists, list_size]` bool, True for existing items.
      k: rank cutoff (int >= 1) or None.

    Returns:
      `[num_lists]` float64, NaN for lists without a positive label.
    """
    _check_cutoff(k)
    ranked_gains, ideal_gains = _ranked_gains(*_as_inputs(labels, scores, mask))
    return _ndcg_from_gains(ranked_gains, ideal_gains, k)


def reciprocal_rank_per_list(labels, scores, mask):
    """Compute 1 / rank of the first positive item of every list (rank 1 is the top).

    Same arguments as `ndcg_per_list`. Returns `[num_lists]` float64, NaN for lists
    without a positive label.
    """
    ranked_gains, _ = _ranked_gains(*_as_inputs(labels, scores, mask))
    return _reciprocal_rank_from_gains(ranked_gains)


def _mean_and_count(per_list):
    count = int(np.sum(~np.isnan(per_list)))
    if count == 0:
        return math.nan, 0
    return float(np.nanmean(per_list)), count


def ndcg_at_k(labels, scores, mask, k=None):
    """Compute mean NDCG@k over the lists with at least one positive label.

    See `ndcg_per_list` for the formula and arguments.

    Returns:
      `(ndcg, lists)`: the mean as a float (NaN when no list has a positive) and the
      number of lists averaged.
    """
    return _mean_and_count(ndcg_per_list(labels, scores, mask, k))


def mrr(labels, scores, mask):
    """Compute the mean reciprocal rank of the first positive item.

    Same arguments as `ndcg_per_list`. Returns `(mrr, lists)` over the lists with at
    least one positive label, NaN when there is none.
    """
    return _mean_and_count(reciprocal_rank_per_list(labels, scores, mask))


def _average_ranks(values):
    """Return the 1-based ranks of a 1-D array, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Compare neighbours instead of np.diff, because inf - inf is NaN and would split a tie.
    group_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_ends = np.r_[group_starts[1:], len(values)]
    mean_ranks = (group_starts + 1 + group_ends) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_ranks, group_ends - group_starts)
    return ranks


def auc(labels, scores, mask):
    """Compute the pointwise ROC AUC over all valid items of all lists, pooled.

    AUC is the probability that a random positive (label > 0) scores above a random
    negative (label 0), and a tie counts one half (the Mann-Whitney U statistic).
    Any strictly increasing transform of the scores gives the same AUC, so logits and
    sigmoid probabilities agree.

    Args:
      labels: `[num_lists, list_size]` float, below 0 for padding or a missing label.
      scores: `[num_lists, list_size]` float, logits or probabilities.
      mask: `[num_lists, list_size]` bool, True for existing items.

    Returns:
      float AUC, or NaN when the valid items are all positive or all negative,
      because AUC is undefined without both classes.
    """
    labels, scores, valid = _as_inputs(labels, scores, mask)
    item_scores = scores[valid]
    is_positive = labels[valid] > 0
    num_positive = int(np.sum(is_positive))
    num_negative = len(is_positive) - num_positive
    if num_positive == 0 or num_negative == 0:
        return math.nan

    ranks = _average_ranks(item_scores)
    rank_sum = float(np.sum(ranks[is_positive]))
    u_statistic = rank_sum - num_positive * (num_positive + 1) / 2.0
    return u_statistic / (num_positive * num_negative)


def dpr_violation_rate(probs, mask):
    """Compute the share of valid items whose predicted probability rises along the funnel.

    An item violates the funnel when p_t > p_{t-1} for some task t >= 2, for example a
    purchase probability above the click probability.

    Args:
      probs: list of `[num_lists, list_size]` float arrays, one per task in funnel order.
      mask: `[num_lists, list_size]` bool, True for existing items.

    Returns:
      float in [0, 1], or NaN when there are fewer than two tasks or no valid item,
      because then no funnel step can be checked.
    """
    mask = np.asarray(mask, dtype=bool)
    probs = [np.asarray(task_probs, dtype=np.float64) for task_probs in probs]
    for index, task_probs in enumerate(probs):
        _check_same_shape(f"probs[{index}]", task_probs, "mask", mask)
    if len(probs) < 2 or not np.any(mask):
        return math.nan

    violated = np.zeros(mask.shape, dtype=bool)
    for previous, current in itertools.pairwise(probs):
        violated |= current > previous
    return float(np.sum(violated & mask) / np.sum(mask))


def original_order_scores(mask):
    """Return scores that reproduce the stored order of every list.

    Args:
      mask: `[num_lists, list_size]` bool.

    Returns:
      `[num_lists, list_size]` float64 equal to -position, so position 0 ranks first.
      Pooled AUC on these scores ranks items by position across all lists.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(
            f"mask must have shape [num_lists, list_size], got shape {mask.shape}."
        )
    positions = np.arange(mask.shape[1], dtype=np.float64)
    return np.broadcast_to(-positions, mask.shape).copy()


def task_metrics(labels, scores, mask):
    """Compute every metric of one task under one ranking.

    Args:
      labels: `[num_lists, list_size]` float labels of the task, below 0 for padding.
      scores: `[num_lists, list_size]` float, higher ranks earlier. AUC uses the same
        scores, which for a model's logits equals AUC on its sigmoid probabilities.
      mask: `[num_lists, list_size]` bool, True for existing items.

    Returns:
      dict with "ndcg@5", "ndcg@10", "ndcg", "mrr", "auc" (floats, NaN when undefined)
      and "lists", the number of lists with at least one positive.
    """
    labels, scores, valid = _as_inputs(labels, scores, mask)
    # Sort once and derive every ranking metric from the same order.
    ranked_gains, ideal_gains = _ranked_gains(labels, scores, valid)

    result = {}
    for k in NDCG_CUTOFFS:
        result[f"ndcg@{k}"], _ = _mean_and_count(
            _ndcg_from_gains(ranked_gains, ideal_gains, k)
        )
    result["ndcg"], lists = _mean_and_count(
        _ndcg_from_gains(ranked_gains, ideal_gains, None)
    )
    result["mrr"], _ = _mean_and_count(_reciprocal_rank_from_gains(ranked_gains))
    result["auc"] = auc(labels, scores, valid)
    result["lists"] = lists
    return result


def sigmoid(logits):
    """Return the logistic function of `logits` as float64, without overflow warnings."""
    logits = np.asarray(logits, dtype=np.float64)
    exp_neg_abs = np.exp(-np.abs(logits))
    return np.where(
        logits >= 0, 1.0 / (1.0 + exp_neg_abs), exp_neg_abs / (1.0 + exp_neg_abs)
    )


def json_ready(value):
    """Convert numpy scalars and arrays to Python types, NaN and inf to None, recursively."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _region_names(regions, num_lists):
    """Return regions as a `[num_lists]` array of str, decoding bytes as UTF-8."""
    regions = np.asarray(regions)
    if regions.shape != (num_lists,):
        raise ValueError(
            f"regions must have shape [num_lists] = ({num_lists},), got shape "
            f"{regions.shape}. Pass one region per list."
        )
    names = [
        region.decode("utf-8") if isinstance(region, bytes) else str(region)
        for region in regions.tolist()
    ]
    return np.asarray(names, dtype=object)


def group_regions(regions, min_region_lists):
    """Select the lists of every reported region.

    A region with at least `min_region_lists` lists is reported under its own name.
    Smaller regions, and a region already named "other", are pooled under "other",
    which is left out when it would be empty.

    Args:
      regions: `[num_lists]` array of str (or bytes, decoded as UTF-8).
      min_region_lists: int >= 1.

    Returns:
      `(selectors, pooled)`: a dict from region name to a `[num_lists]` bool array, larger
      regions first and "other" last, and the sorted names pooled into "other".
    """
    if isinstance(min_region_lists, bool) or not isinstance(
        min_region_lists, (int, np.integer)
    ):
        raise TypeError(
            f"min_region_lists must be an int >= 1, got {min_region_lists!r}."
        )
    if min_region_lists < 1:
        raise ValueError(
            f"min_region_lists must be an int >= 1, got {min_region_lists}."
        )
    regions = np.asarray(regions, dtype=object)
    names, counts = np.unique(regions, return_counts=True)

    # Sort by descending list count, then by name, so the report lists large regions first.
    by_size = sorted(
        zip(names.tolist(), counts.tolist()), key=lambda pair: (-pair[1], pair[0])
    )
    selectors = {}
    pooled = []
    for name, count in by_size:
        if count >= min_region_lists and name != OTHER_REGION:
            selectors[name] = regions == name
        else:
            pooled.append(name)
    if pooled:
        selectors[OTHER_REGION] = np.isin(regions, pooled)
    return selectors, sorted(pooled)


def _check_task_keys(labels, model_scores):
    if not model_scores:
        raise ValueError(
            "model_scores is empty. Pass one [num_lists, list_size] logit array per task."
        )
    if set(labels) != set(model_scores):
        raise ValueError(
            f"labels and model_scores must have the same tasks, got labels for "
            f"{sorted(labels)} and model_scores for {sorted(model_scores)}. For a task "
            "the dataset does not record, pass labels filled with -1."
        )
    reserved = sorted(set(model_scores) & set(_REGION_KEYS))
    if reserved:
        raise ValueError(
            f"task names {reserved} are reserved for per-region entries of the result. "
            "Rename the task in the feature spec."
        )


def _evaluate_subset(labels, scorers, model_scores, mask, selector):
    """Compute `{task: {scorer: metrics}}` and the DPR violation rate on the selected lists."""
    result = {}
    for task, task_labels in labels.items():
        result[task] = {
            name: task_metrics(
                task_labels[selector], task_scores[task][selector], mask[selector]
            )
            for name, task_scores in scorers.items()
        }
    probs = [sigmoid(logits[selector]) for logits in model_scores.values()]
    return result, dpr_violation_rate(probs, mask[selector])


def evaluate_lists(
    labels, model_scores, serving_score, mask, regions, min_region_lists=50
):
    """Evaluate a model against the original order, overall and per region.

    For task t, the "model" ranking sorts every list by the logits of task t, so each
    task is judged on its own head. With `serving_score`, "model_score" ranks the list by
    that single score for every task, which is the score the SavedModel returns for
    sorting.
    "original" keeps the stored order. The DPR violation rate uses sigmoid(logits) of
    the tasks in the order of `model_scores`, which must be the funnel order.

    Args:
      labels: dict from task name to `[num_lists, list_size]` float labels, below 0 for
        padding or a missing label.
      model_scores: dict from task name to `[num_lists, list_size]` float logits, in
        funnel order, with the same tasks as `labels`.
      serving_score: `[num_lists, list_size]` float serving score, or None.
      mask: `[num_lists, list_size]` bool, True for existing items.
      regions: `[num_lists]` str or bytes region of every list.
      min_region_lists: regions with fewer lists are pooled as "other".

    Returns:
      JSON-ready dict, with None where a metric is undefined (NaN):
      "tasks" (funnel order), "num_lists", "num_items" (valid items), "min_region_lists",
      "scorers" (what each ranking name means), "overall" `{task: {scorer: metrics}}`,
      "regions" `{region: {"lists": n, "dpr_violation_rate": rate, task: {scorer:
      metrics}}}`, "pooled_regions" (names pooled into "other") and "dpr_violation_rate".
    """
    _check_task_keys(labels, model_scores)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(
            f"mask must have shape [num_lists, list_size], got shape {mask.shape}."
        )
    tasks = list(model_scores)
    labels = {task: np.asarray(labels[task], dtype=np.float64) for task in tasks}
    model_scores = {
        task: np.asarray(model_scores[task], dtype=np.float64) for task in tasks
    }
    for task in tasks:
        _check_same_shape(f"labels[{task!r}]", labels[task], "mask", mask)
        _check_same_shape(f"model_scores[{task!r}]", model_scores[task], "mask", mask)
    region_names = _region_names(regions, mask.shape[0])

    original = original_order_scores(mask)
    scorers = {MODEL: model_scores}
    if serving_score is not None:
        serving_score = np.asarray(serving_score, dtype=np.float64)
        _check_same_shape("serving_score", serving_score, "mask", mask)
        scorers[MODEL_SCORE] = {task: serving_score for task in tasks}
    scorers[ORIGINAL_ORDER] = {task: original for task in tasks}

    all_lists = np.ones(mask.shape[0], dtype=bool)
    overall, dpr_rate = _evaluate_subset(labels, scorers, model_scores, mask, all_lists)

    selectors, pooled = group_regions(region_names, min_region_lists)
    per_region = {}
    for region, selector in selectors.items():
        region_metrics, region_dpr_rate = _evaluate_subset(
            labels, scorers, model_scores, mask, selector
        )
        per_region[region] = {
            "lists": int(np.sum(selector)),
            "dpr_violation_rate": region_dpr_rate,
            **region_metrics,
        }

    result = {
        "tasks": tasks,
        "num_lists": int(mask.shape[0]),
        "num_items": int(np.sum(mask)),
        "min_region_lists": int(min_region_lists),
        "scorers": {name: SCORER_DESCRIPTIONS[name] for name in scorers},
        "overall": overall,
        "regions": per_region,
        "pooled_regions": pooled,
        "dpr_violation_rate": dpr_rate,
    }
    return json_ready(result)
