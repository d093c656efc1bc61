"""Statistics for model comparisons over seeds: t-intervals and paired differences.

A comparison trains every model once per seed and evaluates it on the same lists. A metric
therefore has one value per (model, seed). The interval of a model is the 95% Student-t
interval of its per-seed values. The paired difference between two models subtracts their
values seed by seed (model A with seed s minus model B with seed s), then takes the t-interval
of those differences. Only numpy and the standard library are used, so no scipy is needed.
"""

import functools
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

# Two-sided confidence level of every interval.
CONFIDENCE = 0.95
# Subintervals of the Simpson rule that integrates the t density. With 20,000 the quantile for
# 1 degree of freedom (12.706, where the density is heavy-tailed) is exact to about 1e-9.
_SIMPSON_INTERVALS = 20_000


def _t_density(x: np.ndarray, df: int) -> np.ndarray:
  log_norm = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
              - 0.5 * math.log(df * math.pi))
  return np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))


def _t_cdf(x: float, df: int) -> float:
  """Return P(T <= x) for x >= 0, integrating the density from 0 with Simpson's rule."""
  grid = np.linspace(0.0, x, _SIMPSON_INTERVALS + 1)
  values = _t_density(grid, df)
  step = x / _SIMPSON_INTERVALS
  integral = step / 3 * (values[0] + values[-1] + 4 * values[1:-1:2].sum()
                         + 2 * values[2:-1:2].sum())
  return 0.5 + integral


@functools.lru_cache(maxsize=None)
def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
  """Return the two-sided Student-t critical value: P(|T| <= q) = confidence for T ~ t(df).

  For df=2 and confidence 0.95 this is 4.3027. Found by bisection on the t CDF.
  """
  if isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
    raise ValueError(f"degrees of freedom must be an integer >= 1, got {df!r}")
  target = 0.5 + confidence / 2
  low, high = 0.0, 1.0
  while _t_cdf(high, df) < target:
    high *= 2
  for _ in range(60):
    middle = (low + high) / 2
    if _t_cdf(middle, df) < target:
      low = middle
    else:
      high = middle
  return (low + high) / 2


def t_interval(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
  """Return the mean and 95% t-interval of `values` (one value per seed).

  Missing values (None or NaN) are left out. The interval is mean +- t(n-1) * sd / sqrt(n),
  with the sample standard deviation sd (ddof=1).

  Returns:
    {"mean", "low", "high", "half_width", "n"}: the bounds are None when fewer than 2 values
    remain, and every float is None when no value remains.
  """
  kept = np.asarray([v for v in values if v is not None and not math.isnan(v)],
                    dtype=np.float64)
  n = int(kept.size)
  if n == 0:
    return {"mean": None, "low": None, "high": None, "half_width": None, "n": 0}
  mean = float(kept.mean())
  if n < 2:
    return {"mean": mean, "low": None, "high": None, "half_width": None, "n": n}
  half_width = t_quantile(n - 1) * float(kept.std(ddof=1)) / math.sqrt(n)
  return {"mean": mean, "low": mean - half_width, "high": mean + half_width,
          "half_width": half_width, "n": n}


def paired_difference(values: Dict[int, Optional[float]],
                      reference: Dict[int, Optional[float]]) -> Dict[str, Optional[float]]:
  """Return the t-interval of values[seed] - reference[seed] over the seeds both have.

  Args:
    values: {seed: metric} of the model.
    reference: {seed: metric} of the model it is compared with.

  Returns:
    `t_interval` of the per-seed differences plus "excludes_zero": True when the interval
    lies entirely above or below 0, False when it contains 0, None without an interval.
    "seeds" lists the seeds that were paired.
  """
  seeds = sorted(seed for seed in values if seed in reference
                 and values[seed] is not None and reference[seed] is not None)
  result = t_interval([values[seed] - reference[seed] for seed in seeds])
  if result["low"] is None:
    result["excludes_zero"] = None
  else:
    result["excludes_zero"] = bool(result["low"] > 0 or result["high"] < 0)
  result["seeds"] = seeds
  return result


def relative_change(mean: Optional[float], reference_mean: Optional[float]) -> Optional[float]:
  """Return (mean - reference_mean) / reference_mean, or None when undefined."""
  if mean is None or reference_mean is None or reference_mean == 0:
    return None
  return (mean - reference_mean) / reference_mean


# ----------------------------------------------------------------------------------------------
# Summary of a comparison.

# Metrics summarized over the whole evaluation set, per task; NDCG@10 is the headline.
OVERALL_METRICS = ("ndcg@10", "ndcg@5", "ndcg", "mrr", "auc")
# The per-region tables and plots compare this metric.
REGION_METRIC = "ndcg@10"
# Every model is compared with this one, under the same region mask.
REFERENCE_MODEL = "mmoe"
# Bodies of this method; every other model is a baseline.
METHOD_MODELS = ("seq", "seq_md")


def config_id(model: str, mask: str) -> str:
  return f"{model}-{mask}"


def _metric_summary(values: Dict[int, Optional[float]],
                    reference: Optional[Dict[int, Optional[float]]],
                    keep_values: bool = True) -> dict:
  """Return the interval of {seed: value}, its change against `reference` and the paired test.

  With `keep_values` the summary also contains the per-seed values under "values".
  """
  summary = t_interval(list(values.values()))
  if keep_values:
    summary["values"] = {str(seed): value for seed, value in sorted(values.items())}
  if reference is None:
    summary["relative_to_reference"] = None
    summary["paired_vs_reference"] = None
    return summary
  paired = paired_difference(values, reference)
  # Both means are taken over the seeds the two models share, so a comparison with missing
  # runs compares like with like. With every run finished this is the change of the means.
  shared_seeds = paired["seeds"]
  summary["relative_to_reference"] = relative_change(
      t_interval([values[seed] for seed in shared_seeds])["mean"],
      t_interval([reference[seed] for seed in shared_seeds])["mean"])
  summary["paired_vs_reference"] = paired
  return summary


def _values_by_config(runs: Sequence[dict], extract) -> Dict[str, Dict[int, Optional[float]]]:
  """Return {config_id: {seed: extract(run)}} over the runs."""
  table: Dict[str, Dict[int, Optional[float]]] = {}
  for run in runs:
    table.setdefault(config_id(run["model"], run["mask"]), {})[run["seed"]] = extract(run)
  return table


def _summarize_metric(runs, configs, extract, keep_values: bool = True) -> Dict[str, dict]:
  """Return {config_id: `_metric_summary`} of one metric, each against mmoe with its mask."""
  table = _values_by_config(runs, extract)
  result = {}
  for config in configs:
    values = table.get(config["id"], {})
    reference = table.get(config_id(REFERENCE_MODEL, config["mask"]))
    if config["model"] == REFERENCE_MODEL:
      reference = None
    result[config["id"]] = _metric_summary(values, reference, keep_values)
  return result


def _nested_get(mapping, *keys):
  for key in keys:
    if mapping is None or key not in mapping:
      return None
    mapping = mapping[key]
  return mapping


def best_baseline(overall: dict, configs: Sequence[dict], task: str) -> Optional[str]:
  """Return the baseline config (any mask) with the highest mean NDCG@10 on `task`."""
  best, best_mean = None, None
  for config in configs:
    if config["model"] in METHOD_MODELS:
      continue
    mean = overall[task]["ndcg@10"][config["id"]]["mean"]
    if mean is not None and (best_mean is None or mean > best_mean):
      best, best_mean = config["id"], mean
  return best


def _claim(overall_metric: dict, runs_table, task: str, model: str, against: str) -> dict:
  return {"task": task, "metric": "ndcg@10", "model": model, "against": against,
          "model_interval": overall_metric[model], "against_interval": overall_metric[against],
          "paired": paired_difference(runs_table[model], runs_table[against])}


def claim_checks(runs, overall, configs, tasks) -> List[dict]:
  """Return the checks of the method's claim, for every SEQ+MD config (mask on):

  last-task NDCG@10 against the best baseline, and first-task NDCG@10 against mmoe with each
  mask that was run.
  """
  ids = [config["id"] for config in configs]
  last, first = tasks[-1], tasks[0]
  best = best_baseline(overall, configs, last)
  last_table = _values_by_config(runs, lambda r: _nested_get(r, "overall", last, "ndcg@10"))
  first_table = _values_by_config(runs, lambda r: _nested_get(r, "overall", first, "ndcg@10"))
  claims = []
  for config in configs:
    if config["model"] != "seq_md":
      continue
    if best is not None:
      claims.append(_claim(overall[last]["ndcg@10"], last_table, last, config["id"], best))
    for mmoe in (config_id(REFERENCE_MODEL, mask) for mask in ("off", "feature", "element")):
      if mmoe in ids:
        claims.append(_claim(overall[first]["ndcg@10"], first_table, first, config["id"], mmoe))
  return claims


def summarize(runs: Sequence[dict], configs: Sequence[dict], tasks: Sequence[str]) -> dict:
  """Aggregate per-run metrics into intervals over seeds.

  Args:
    runs: compact run records, each {"model", "mask", "seed", "overall": {task: {metric: v}},
      "regions": {region: {"lists": n, task: ndcg@10}}, "oracle": {task: {...}} or None}.
    configs: [{"id", "model", "mask"}] in report order.
    tasks: task names in funnel order.

  Returns:
    {"overall": {task: {metric: {config_id: summary}}}, "regions": {task: {region:
    {config_id: summary}}}, "oracle": {task: {config_id: summary}} or None, "best_baseline":
    {task: config_id}, "claims": `claim_checks`}. A summary is `t_interval` plus
    "relative_to_reference" and "paired_vs_reference" (against mmoe with the same mask, None
    for mmoe itself), and outside "regions" also "values" {seed: value}.
  """
  overall = {task: {metric: _summarize_metric(
      runs, configs, lambda r, t=task, m=metric: _nested_get(r, "overall", t, m))
      for metric in OVERALL_METRICS} for task in tasks}

  region_names = []
  for run in runs:
    region_names.extend(name for name in run["regions"] if name not in region_names)
  # The per-seed values of a region stay in `runs` only, which keeps results.json small.
  regions = {task: {region: _summarize_metric(
      runs, configs, lambda r, t=task, g=region: _nested_get(r, "regions", g, t),
      keep_values=False) for region in region_names} for task in tasks}

  oracle = None
  if any(run.get("oracle") for run in runs):
    oracle = {task: _summarize_metric(
        runs, configs, lambda r, t=task: _nested_get(r, "oracle", t, "model_oracle_ndcg@10"))
        for task in tasks}
  return {"overall": overall, "regions": regions, "oracle": oracle,
          "best_baseline": {task: best_baseline(overall, configs, task) for task in tasks},
          "claims": claim_checks(runs, overall, configs, tasks)}
