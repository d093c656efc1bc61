"""Write a model comparison's results.json and render its summary as markdown."""

import json
import os
from typing import List, Optional, Sequence

from seqmd_tf import compare_stats

_DIGITS = 4
_MISSING = "n/a"
# Decimal places kept in results.json: 1e-6 is far below any difference between seeds, and
# rounding keeps the committed file small.
_JSON_DIGITS = 6


def _value(value: Optional[float]) -> str:
  return _MISSING if value is None else f"{value:.{_DIGITS}f}"


def _interval(summary: Optional[dict]) -> str:
  """Return "mean [low, high]", or the mean alone when there is no interval."""
  if summary is None or summary["mean"] is None:
    return _MISSING
  if summary["low"] is None:
    return f"{_value(summary['mean'])} (n={summary['n']})"
  return f"{_value(summary['mean'])} [{_value(summary['low'])}, {_value(summary['high'])}]"


def _percent(value: Optional[float]) -> str:
  return _MISSING if value is None else f"{100 * value:+.2f}%"


def _paired(paired: Optional[dict]) -> str:
  """Return "+0.0123 [+0.0050, +0.0196] *" with * when the interval excludes 0."""
  if paired is None or paired["mean"] is None:
    return _MISSING
  if paired["low"] is None:
    return f"{paired['mean']:+.{_DIGITS}f} (n={paired['n']})"
  mark = " *" if paired["excludes_zero"] else ""
  return (f"{paired['mean']:+.{_DIGITS}f} [{paired['low']:+.{_DIGITS}f}, "
          f"{paired['high']:+.{_DIGITS}f}]{mark}")


def _compact(summary: Optional[dict]) -> str:
  """Return "mean ±half (+x.x%*)" for the wide per-region tables."""
  if summary is None or summary["mean"] is None:
    return _MISSING
  text = _value(summary["mean"])
  if summary["half_width"] is not None:
    text += f" ±{summary['half_width']:.{_DIGITS}f}"
  if summary.get("relative_to_reference") is not None:
    paired = summary["paired_vs_reference"]
    mark = "*" if paired and paired["excludes_zero"] else ""
    text += f" ({100 * summary['relative_to_reference']:+.1f}%{mark})"
  return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return lines


def verdict(paired: Optional[dict]) -> str:
  """Return the plain-words result of a paired difference (model minus the other)."""
  if paired is None or paired["excludes_zero"] is None:
    return "not enough seeds"
  if not paired["excludes_zero"]:
    return "tie (interval contains 0)"
  return "SEQ+MD better" if paired["low"] > 0 else "SEQ+MD worse"


def _header_lines(results: dict) -> List[str]:
  settings = results["settings"]
  evaluated_on = settings["evaluated_on"]
  lines = [
      f"# Model comparison on {settings['dataset']}",
      "",
      f"Runs finished: {results['runs_finished']} of {results['runs_planned']} "
      f"(seeds {', '.join(str(s) for s in settings['seeds'])}).",
      f"Training: {settings['epochs']} epochs, batch {settings['batch_size']}, learning rate "
      f"{settings['learning_rate']}, loss {settings['loss']}, DPR weight "
      f"{settings['dpr_weight']}, pointwise weight {settings['pointwise_weight']}, "
      f"steps per epoch {settings['steps_per_epoch'] or 'one pass'}; the same for every run.",
      f"Training files: `{settings['train_files']}`. Evaluated on: {evaluated_on}.",
      "",
      "How to read the tables:",
      "",
      "- A value is the mean over seeds with its 95% t-interval in brackets "
      "(mean +- t(n-1) * sd / sqrt(n)).",
      f"- `vs {compare_stats.REFERENCE_MODEL}`: relative change of the mean against "
      f"{compare_stats.REFERENCE_MODEL} with the same region mask, both means over the seeds "
      "the two share.",
      f"- `paired diff`: mean and 95% t-interval of (model - {compare_stats.REFERENCE_MODEL}) "
      "computed seed by seed. Runs with the same seed are paired: the seed sets the weight "
      "initialization and the shuffling order, and all runs are evaluated on the same lists. "
      "`*` marks an interval that excludes 0.",
      "- `seq` and `seq_md` are one body: `seq` is that body with the region mask off and "
      "`seq_md` the same body with the mask on, so each is trained once per seed.",
  ]
  return lines


def _claim_lines(results: dict) -> List[str]:
  claims = results["summary"]["claims"]
  if not claims:
    return []
  rows = []
  for claim in claims:
    rows.append([f"`{claim['task']}` NDCG@10", f"`{claim['model']}`",
                 _interval(claim["model_interval"]), f"`{claim['against']}`",
                 _interval(claim["against_interval"]), _paired(claim["paired"]),
                 verdict(claim["paired"])])
  lines = ["", "## Claim check", "",
           "Last task against the best baseline (the non-SEQ config with the highest mean "
           "last-task NDCG@10, either mask), first task against mmoe. The difference is SEQ+MD "
           "minus the other, paired by seed.", ""]
  return lines + _table(["metric", "SEQ+MD", "value", "against", "value", "paired difference",
                         "result"], rows)


def _overall_lines(results: dict, task: str) -> List[str]:
  summary = results["summary"]["overall"][task]
  rows = []
  for config in results["configs"]:
    ndcg10 = summary["ndcg@10"][config["id"]]
    rows.append([f"`{config['model']}`", config["mask"], _interval(ndcg10),
                 _percent(ndcg10["relative_to_reference"]), _paired(ndcg10["paired_vs_reference"])]
                + [_interval(summary[m][config["id"]]) for m in ("ndcg@5", "mrr", "auc")])
  original = results["original"]["overall"][task]
  rows.append(["original order", "", _value(original["ndcg@10"]), "", ""]
              + [_value(original[m]) for m in ("ndcg@5", "mrr", "auc")])
  header = ["model", "mask", "NDCG@10", f"vs {compare_stats.REFERENCE_MODEL}",
            f"paired diff vs {compare_stats.REFERENCE_MODEL}", "NDCG@5", "MRR", "AUC"]
  lists = original["lists"]
  return (["", f"## Task `{task}`", "", f"Lists with a positive for `{task}`: {lists}.", ""]
          + _table(header, rows))


def _oracle_lines(results: dict) -> List[str]:
  oracle = results["summary"]["oracle"]
  if not oracle:
    return []
  tasks = results["tasks"]
  rows = [[f"`{c['model']}`", c["mask"]] + [_interval(oracle[t][c["id"]]) for t in tasks]
          for c in results["configs"]]
  reference = results["original"]["oracle"]
  rows.append(["original order", ""] + [_value(reference[t]["original_oracle_ndcg@10"])
                                        for t in tasks])
  ceiling = [["true probability, on observed labels", ""]
             + [_value(reference[t]["oracle_ndcg@10"]) for t in tasks]]
  lines = ["", "## Against the generator's ground truth", "",
           "Oracle NDCG@10: the model's ranking for a task scored with graded gain = the true "
           "probability of that task for each item (the generator's `oracle_<task>` feature; "
           "gain p, ideal order = items sorted by p), averaged over all lists. 1.0 means the "
           "model orders every list exactly as the true probabilities do.", ""]
  lines += _table(["model", "mask"] + [f"`{t}` oracle NDCG@10" for t in tasks], rows)
  lines += ["", "Ceiling: ranking every list by the true probability of the task and scoring "
            "it on the observed labels (NDCG@10 as in the task tables). No model can expect to "
            "beat it except by label noise.", ""]
  lines += _table(["ranking", ""] + [f"`{t}` NDCG@10" for t in tasks], ceiling)
  return lines


def _region_lines(results: dict, task: str) -> List[str]:
  summary = results["summary"]["regions"][task]
  original = results["original"]["regions"]
  masks = []
  for config in results["configs"]:
    if config["mask"] not in masks:
      masks.append(config["mask"])
  lines = ["", f"## Per region: `{task}` NDCG@10", "",
           f"Cell: mean ±half-width of the 95% interval (relative change against "
           f"{compare_stats.REFERENCE_MODEL} with the same mask, `*` when the paired interval "
           "excludes 0). `other` pools the regions with fewer than "
           f"{results['settings']['min_region_lists']} evaluation lists."]
  for mask in masks:
    configs = [c for c in results["configs"] if c["mask"] == mask]
    header = (["region", "lists with a positive", "original"]
              + [f"`{c['model']}`" for c in configs])
    rows = []
    for region, entry in original.items():
      rows.append([region, str(entry["lists"].get(task, _MISSING)), _value(entry[task])]
                  + [_compact(summary.get(region, {}).get(c["id"])) for c in configs])
    lines += ["", f"Region mask `{mask}`:", ""] + _table(header, rows)
  return lines


def format_results(results: dict) -> str:
  """Return the markdown report of a comparison's results.json dict."""
  lines = _header_lines(results)
  lines += _claim_lines(results)
  for task in results["tasks"]:
    lines += _overall_lines(results, task)
  lines += _oracle_lines(results)
  for task in results["tasks"]:
    lines += _region_lines(results, task)
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# results.json and the files written beside it.


def _ordered_regions(regions: dict) -> list:
  """Return region names, larger regions first and "other" last (JSON keys come back sorted)."""
  return sorted(regions, key=lambda name: (name == "other", -regions[name]["lists"], name))


def compact_run(record: dict, tasks: Sequence[str]) -> dict:
  """Return the per-run values that the summary needs: the model's metrics, NDCG@10 per region."""
  evaluation = record["evaluation"]
  overall = {task: {metric: evaluation["overall"][task]["model"][metric]
                    for metric in compare_stats.OVERALL_METRICS} for task in tasks}
  regions = {region: {task: evaluation["regions"][region][task]["model"]["ndcg@10"]
                      for task in tasks}
             for region in _ordered_regions(evaluation["regions"])}
  oracle = None
  if record.get("oracle"):
    oracle = {task: {"model_oracle_ndcg@10": record["oracle"][task]["model_oracle_ndcg@10"]}
              for task in tasks}
  return {"model": record["model"], "mask": record["mask"], "seed": record["seed"],
          "train_seconds": record["train_seconds"], "overall": overall, "regions": regions,
          "oracle": oracle}


def original_order(record: dict, tasks: Sequence[str]) -> dict:
  """Return the original order's metrics, which are the same in every run of a comparison."""
  evaluation = record["evaluation"]
  regions = {}
  for region in _ordered_regions(evaluation["regions"]):
    entry = evaluation["regions"][region]
    lists = {"all": entry["lists"]}
    lists.update({task: entry[task]["original"]["lists"] for task in tasks})
    regions[region] = {"lists": lists}
    regions[region].update({task: entry[task]["original"]["ndcg@10"] for task in tasks})
  oracle = None
  if record.get("oracle"):
    oracle = {task: {key: record["oracle"][task][key]
                     for key in ("original_oracle_ndcg@10", "oracle_ndcg@10")} for task in tasks}
  return {"num_lists": evaluation["num_lists"],
          "overall": {task: evaluation["overall"][task]["original"] for task in tasks},
          "regions": regions, "oracle": oracle}


def heatmap_run(records: Sequence[dict]) -> Optional[dict]:
  """Return the seq_md run (mask on) with the lowest seed, whose learned mask is plotted."""
  candidates = [r for r in records if r["model"] == "seq_md" and r.get("region_mask")]
  return min(candidates, key=lambda r: (r["seed"], r["mask"])) if candidates else None


def build_results(records: Sequence[dict], keys: Sequence, tasks: Sequence[str],
                  settings: dict) -> dict:
  """Return the results.json dict: settings, every run's metrics and the summary over seeds."""
  configs = []
  for key in keys:
    config = {"id": key.config_id, "model": key.model, "mask": key.mask}
    if config not in configs:
      configs.append(config)
  runs = [compact_run(record, tasks) for record in records]
  mask_run = heatmap_run(records)
  region_mask = None
  if mask_run is not None:
    region_mask = dict(mask_run["region_mask"], run=f"{mask_run['model']}-{mask_run['mask']}-"
                       f"{mask_run['seed']}")
  return {"settings": settings, "tasks": list(tasks), "configs": configs,
          "runs_planned": len(keys), "runs_finished": len(records),
          "original": original_order(records[0], tasks) if records else None,
          "runs": runs, "summary": compare_stats.summarize(runs, configs, tasks),
          "region_mask": region_mask}


def _rounded(value):
  """Return `value` with every float rounded to `_JSON_DIGITS` decimals, recursively."""
  if isinstance(value, float):
    return round(value, _JSON_DIGITS)
  if isinstance(value, dict):
    return {key: _rounded(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_rounded(item) for item in value]
  return value


def write_outputs(records: Sequence[dict], keys: Sequence, tasks: Sequence[str], settings: dict,
                  output_dir: str) -> List[str]:
  """Write results.json, results.md and the plots to `output_dir`; return their paths."""
  # Imported here because matplotlib is only needed once the runs are done.
  from seqmd_tf import compare_plots  # pylint: disable=g-import-not-at-top

  results = build_results(records, keys, tasks, settings)
  paths = [os.path.join(output_dir, "results.json"), os.path.join(output_dir, "results.md")]
  # The per-region summaries (the bulk of the summary) are left out of results.json to keep it
  # small. They are in results.md, and `compare_stats.summarize` recomputes them from "runs".
  summary = {key: value for key, value in results["summary"].items() if key != "regions"}
  texts = [json.dumps(_rounded(dict(results, summary=summary)), sort_keys=True, allow_nan=False,
                      separators=(",", ":")) + "\n",
           format_results(results)]
  for path, text in zip(paths, texts):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
  return paths + compare_plots.write_plots(results, output_dir)
