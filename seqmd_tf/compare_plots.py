"""PNG plots of a model comparison (matplotlib with the Agg backend, no display needed)."""

import os
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from seqmd_tf import callbacks  # pylint: disable=g-import-not-at-top,wrong-import-position

NDCG_PER_TASK_PNG = "ndcg_per_task.png"
REGION_NDCG_PNG = "region_ndcg.png"
REGION_MASK_PNG = "region_mask.png"
# 80 dots per inch keeps each PNG well under 100 kB, small enough to commit.
_DPI = 80
_MASK_COLORS = {"off": "tab:gray", "feature": "tab:orange", "element": "tab:blue"}


def _error(summary: dict) -> float:
  return summary["half_width"] if summary["half_width"] is not None else 0.0


def plot_ndcg_per_task(results: dict, path: str) -> None:
  """Bar chart of NDCG@10 per task: one group per model, one bar per mask, 95% interval bars."""
  tasks = results["tasks"]
  configs = results["configs"]
  models = list(dict.fromkeys(c["model"] for c in configs))
  masks = list(dict.fromkeys(c["mask"] for c in configs))
  width = 0.8 / len(masks)

  figure_size = (max(6.0, 0.9 * len(models) + 2), 3.0 * len(tasks))
  figure, axes = plt.subplots(len(tasks), 1, figsize=figure_size, dpi=_DPI, squeeze=False)
  for axis, task in zip(axes[:, 0], tasks):
    summary = results["summary"]["overall"][task]["ndcg@10"]
    low_values = []
    for mask_index, mask in enumerate(masks):
      xs, means, errors = [], [], []
      for model_index, model in enumerate(models):
        entry = summary.get(f"{model}-{mask}")
        if entry is None or entry["mean"] is None:
          continue
        xs.append(model_index + (mask_index - (len(masks) - 1) / 2) * width)
        means.append(entry["mean"])
        errors.append(_error(entry))
      axis.bar(xs, means, width, yerr=errors, capsize=2, label=f"mask {mask}",
               color=_MASK_COLORS.get(mask, "tab:green"))
      low_values += [m - e for m, e in zip(means, errors)]

    original = results["original"]["overall"][task]["ndcg@10"]
    axis.axhline(original, color="black", linestyle="--", linewidth=1, label="original order")
    if low_values:
      axis.set_ylim(min(low_values + [original]) - 0.01, None)
    axis.set_xticks(range(len(models)), models, fontsize=8)
    axis.set_ylabel("NDCG@10")
    axis.set_title(f"{results['settings']['dataset']}: {task} NDCG@10, mean and 95% interval "
                   "over seeds", fontsize=9)
    axis.legend(fontsize=7, loc="lower right")

  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def plot_region_ndcg(results: dict, path: str) -> bool:
  """Per-region NDCG@10 of the last task: the best baseline against seq_md. False if absent."""
  task = results["tasks"][-1]
  best = results["summary"]["best_baseline"][task]
  seq_md = [c["id"] for c in results["configs"] if c["model"] == "seq_md"]
  if best is None or not seq_md:
    return False
  regions = list(results["original"]["regions"])
  summary = results["summary"]["regions"][task]
  figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(regions) + 2), 3.5), dpi=_DPI)
  shown = [best] + seq_md
  width = 0.8 / len(shown)
  for index, config in enumerate(shown):
    entries = [summary[region][config] for region in regions]
    xs = np.arange(len(regions)) + (index - (len(shown) - 1) / 2) * width
    means = [e["mean"] if e["mean"] is not None else np.nan for e in entries]
    axis.bar(xs, means, width, yerr=[_error(e) for e in entries], capsize=1.5, label=config)
  original = [results["original"]["regions"][r][task] for r in regions]
  axis.plot(range(len(regions)), [np.nan if v is None else v for v in original], "k_",
            markersize=10, label="original order")
  axis.set_xticks(range(len(regions)), regions, rotation=90, fontsize=7)
  axis.set_ylabel(f"{task} NDCG@10")
  axis.set_title(f"{results['settings']['dataset']}: {task} NDCG@10 per region, best baseline "
                 "against SEQ+MD (95% interval over seeds)", fontsize=9)
  axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)
  return True


def write_plots(results: dict, output_dir: str) -> List[str]:
  """Write the PNGs that the results support and return their paths."""
  if not results["runs"]:
    return []
  paths = [os.path.join(output_dir, NDCG_PER_TASK_PNG)]
  plot_ndcg_per_task(results, paths[0])
  region_path = os.path.join(output_dir, REGION_NDCG_PNG)
  if plot_region_ndcg(results, region_path):
    paths.append(region_path)
  mask = results.get("region_mask")
  if mask:
    mask_path = os.path.join(output_dir, REGION_MASK_PNG)
    png = callbacks.heatmap_png(np.asarray(mask["matrix"], dtype=np.float64), mask["regions"],
                                mask["features"], f"learned region mask of {mask['run']} "
                                "(1.0 = unchanged)")
    with open(mask_path, "wb") as f:
      f.write(png)
    paths.append(mask_path)
  return paths
