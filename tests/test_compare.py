"""The comparison harness: statistics against hand-computed references, the run plan, the
validation cut, the oracle NDCG, and a tiny end-to-end comparison that resumes."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from seqmd_tf import compare_runs
from seqmd_tf import compare_stats
from seqmd_tf import metrics
from elwc_fixtures import SPEC_DICT, fixture_spec, random_records, write_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# Statistics.


def _t975_df4():
  """t(0.975, 4) from the closed form of the t quantile with 4 degrees of freedom."""
  p = 0.975
  alpha = 4 * p * (1 - p)
  q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
  return 2 * math.sqrt(q - 1)


@pytest.mark.parametrize("df, expected", [
    (1, math.tan(math.pi * (0.975 - 0.5))),  # Cauchy quantile
    (2, 0.95 / math.sqrt(2 * 0.975 * 0.025)),  # (2p - 1) / sqrt(2 p (1 - p))
    (4, _t975_df4()),
])
def test_t_quantile_closed_forms(df, expected):
  assert compare_stats.t_quantile(df) == pytest.approx(expected, abs=1e-7)


def test_t_quantile_large_df_near_normal():
  assert compare_stats.t_quantile(1000) == pytest.approx(1.9623, abs=1e-4)


def test_t_quantile_rejects_zero_df():
  with pytest.raises(ValueError, match="degrees of freedom must be an integer >= 1, got 0"):
    compare_stats.t_quantile(0)


def test_t_interval_matches_hand_computation():
  values = [0.50, 0.52, 0.57]
  mean = (0.50 + 0.52 + 0.57) / 3
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
  half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * sd / math.sqrt(3)
  result = compare_stats.t_interval(values)
  assert result["mean"] == pytest.approx(mean)
  assert result["low"] == pytest.approx(mean - half)
  assert result["high"] == pytest.approx(mean + half)
  assert result["n"] == 3


def test_t_interval_skips_missing_values():
  result = compare_stats.t_interval([0.4, None, float("nan")])
  assert result["mean"] == pytest.approx(0.4)
  assert result["low"] is None
  assert result["n"] == 1


def test_paired_difference_matches_hand_computation():
  model = {1: 0.61, 2: 0.64, 3: 0.625}
  reference = {1: 0.58, 2: 0.60, 3: 0.59}
  differences = [0.03, 0.04, 0.035]
  mean = sum(differences) / 3
  sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
  half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * sd / math.sqrt(3)
  result = compare_stats.paired_difference(model, reference)
  assert result["mean"] == pytest.approx(mean)
  assert result["low"] == pytest.approx(mean - half)
  assert result["high"] == pytest.approx(mean + half)
  assert result["excludes_zero"] is True
  assert result["seeds"] == [1, 2, 3]


def test_paired_difference_uses_common_seeds_only():
  result = compare_stats.paired_difference({1: 0.5, 2: 0.7, 3: 0.6}, {1: 0.6, 2: 0.6})
  assert result["seeds"] == [1, 2]
  assert result["mean"] == pytest.approx(0.0)
  assert result["excludes_zero"] is False


def test_relative_change():
  assert compare_stats.relative_change(0.55, 0.50) == pytest.approx(0.1)
  assert compare_stats.relative_change(0.55, None) is None


def _run(model, mask, seed, value):
  return {"model": model, "mask": mask, "seed": seed, "overall": {"buy": {"ndcg@10": value}},
          "regions": {"DE": {"buy": value}}, "oracle": None}


def test_summary_compares_shared_seeds():
  configs = [{"id": "mmoe-off", "model": "mmoe", "mask": "off"},
             {"id": "ple-off", "model": "ple", "mask": "off"}]
  runs = [_run("mmoe", "off", 1, 0.50), _run("mmoe", "off", 2, 0.70), _run("mmoe", "off", 3, 0.60),
          _run("ple", "off", 1, 0.55), _run("ple", "off", 3, 0.66)]
  summary = compare_stats.summarize(runs, configs, ["buy"])["overall"]["buy"]["ndcg@10"]
  # ple lacks seed 2, so both means are over seeds 1 and 3: (0.605 - 0.55) / 0.55.
  assert summary["ple-off"]["relative_to_reference"] == pytest.approx(0.1)
  assert summary["ple-off"]["paired_vs_reference"]["seeds"] == [1, 3]
  assert summary["mmoe-off"]["relative_to_reference"] is None


def test_summary_best_baseline_skips_seq_models():
  configs = [{"id": "mmoe-off", "model": "mmoe", "mask": "off"},
             {"id": "seq_md-element", "model": "seq_md", "mask": "element"}]
  runs = [_run("mmoe", "off", 1, 0.5), _run("seq_md", "element", 1, 0.9)]
  summary = compare_stats.summarize(runs, configs, ["buy"])
  assert summary["best_baseline"]["buy"] == "mmoe-off"
  assert [(c["model"], c["against"]) for c in summary["claims"]] == [
      ("seq_md-element", "mmoe-off"), ("seq_md-element", "mmoe-off")]


# ----------------------------------------------------------------------------------------------
# Run plan, validation cut, oracle.


def test_plan_trains_seq_body_once_per_mask():
  keys = compare_runs.plan_runs(["mmoe", "seq", "seq_md"], ["off", "element"], [1])
  assert [k.run_id for k in keys] == ["mmoe-off-1", "mmoe-element-1", "seq-off-1",
                                      "seq_md-element-1"]


def test_plan_is_seed_major():
  keys = compare_runs.plan_runs(["mmoe"], ["off"], [1, 2])
  assert [k.seed for k in keys] == [1, 2]


def _record(index):
  return f"list-{index:03d}".encode()


def test_validation_cut_restores_write_order(tmp_path):
  # Two shards filled round-robin, as the converters write them: list i goes to shard i % 2.
  lists = [_record(i) for i in range(9)]
  write_records(str(tmp_path / "train" / "part-00000-of-00002.tfrecord"), lists[0::2])
  write_records(str(tmp_path / "train" / "part-00001-of-00002.tfrecord"), lists[1::2])
  cut = compare_runs.write_validation_cut(str(tmp_path / "train" / "*.tfrecord"), 0.25,
                                          str(tmp_path / "cut"))
  train = [r.numpy() for r in tf.data.TFRecordDataset(cut["train_files"])]
  validation = [r.numpy() for r in tf.data.TFRecordDataset(cut["eval_files"])]
  assert train == lists[:7]
  assert validation == lists[7:]  # round(0.25 * 9) = 2


def test_validation_cut_rejects_empty_side(tmp_path):
  write_records(str(tmp_path / "part-0.tfrecord"), [_record(0), _record(1)])
  with pytest.raises(ValueError, match="leaves 0 validation lists"):
    compare_runs.write_validation_cut(str(tmp_path / "*.tfrecord"), 0.1, str(tmp_path / "cut"))


def _oracle_arrays():
  mask = np.array([[True, True, True, False]])
  return {
      "mask": mask,
      "oracle/buy": np.array([[0.1, 0.6, 0.3, -1.0]]),
      "logits/buy": np.array([[3.0, 1.0, 2.0, 9.0]]),
      "label/buy": np.array([[0.0, 0.0, 1.0, -1.0]]),
  }


def test_oracle_ndcg_uses_probability_as_gain():
  arrays = _oracle_arrays()
  discounts = [1 / math.log2(r + 1) for r in (1, 2, 3)]
  model_dcg = 0.1 * discounts[0] + 0.3 * discounts[1] + 0.6 * discounts[2]
  ideal_dcg = 0.6 * discounts[0] + 0.3 * discounts[1] + 0.1 * discounts[2]
  original_dcg = 0.1 * discounts[0] + 0.6 * discounts[1] + 0.3 * discounts[2]
  result = compare_runs.oracle_metrics(arrays, ["buy"], "oracle_")["buy"]
  assert result["model_oracle_ndcg@10"] == pytest.approx(model_dcg / ideal_dcg)
  assert result["original_oracle_ndcg@10"] == pytest.approx(original_dcg / ideal_dcg)
  # Ranked by the true probability, the purchased item (p = 0.3) comes second.
  assert result["oracle_ndcg@10"] == pytest.approx(discounts[1])


def test_oracle_missing_feature_names_flag():
  arrays = _oracle_arrays()
  arrays["oracle/buy"][0, 1] = -1.0
  with pytest.raises(ValueError, match=r"--oracle_feature_prefix='oracle_': feature "
                                       r"oracle_buy is missing at eval list 0, item 1"):
    compare_runs.oracle_metrics(arrays, ["buy"], "oracle_")


# ----------------------------------------------------------------------------------------------
# In-process evaluation equals the evaluation of the exported model.


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("compare")
  write_records(str(root / "train" / "part-00000-of-00001.tfrecord"), random_records(40, seed=0))
  write_records(str(root / "eval" / "part-00000-of-00001.tfrecord"), random_records(30, seed=1))
  spec_path = root / "spec.json"
  spec_path.write_text(json.dumps(SPEC_DICT))
  return {"train": str(root / "train" / "*.tfrecord"), "eval": str(root / "eval" / "*.tfrecord"),
          "spec": str(spec_path), "root": root}


def test_in_process_metrics_equal_saved_model(files, tmp_path):
  from export.saved_model import export_saved_model
  from seqmd_tf import evaluate
  from seqmd_tf.config import ModelConfig, TrainConfig

  spec = fixture_spec()
  trainer = compare_runs.fit(spec, ModelConfig(model="mmoe", region_mask="element"),
                             TrainConfig(epochs=1, steps_per_epoch=2, batch_size=16),
                             files["train"])
  arrays = compare_runs.predict_lists(trainer.scorer, spec, files["eval"])
  tasks = list(spec.tasks)
  in_process = metrics.evaluate_lists(
      {t: arrays[f"label/{t}"] for t in tasks}, {t: arrays[f"logits/{t}"] for t in tasks},
      arrays["score"], arrays["mask"], arrays["regions"], min_region_lists=5)
  exported = evaluate.evaluate_saved_model(
      export_saved_model(trainer.scorer, spec, str(tmp_path / "export")), spec, files["eval"],
      min_region_lists=5)
  for task in tasks:
    for metric in ("ndcg@10", "mrr", "auc"):
      assert in_process["overall"][task]["model"][metric] == pytest.approx(
          exported["overall"][task]["model"][metric], abs=1e-6), (task, metric)
  assert in_process["regions"].keys() == exported["regions"].keys()


# ----------------------------------------------------------------------------------------------
# End to end: 2 models x 2 masks x 2 seeds, then a second invocation that trains nothing.


def _run_compare(files, output_dir):
  command = [sys.executable, "-m", "seqmd_tf.compare", f"--feature_spec={files['spec']}",
             f"--train_files={files['train']}", f"--eval_files={files['eval']}",
             "--models=mmoe,seq_md", "--region_mask=off,element", "--seeds=2", "--epochs=1",
             "--steps_per_epoch=2", "--batch_size=16", "--min_region_lists=5",
             f"--output_dir={output_dir}"]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                        check=False)


@pytest.fixture(scope="module")
def comparison(files):
  output_dir = str(files["root"] / "out")
  first = _run_compare(files, output_dir)
  assert first.returncode == 0, first.stderr[-3000:]
  mtimes = {run: os.path.getmtime(os.path.join(output_dir, "runs", run, "metrics.json"))
            for run in os.listdir(os.path.join(output_dir, "runs"))}
  second = _run_compare(files, output_dir)
  assert second.returncode == 0, second.stderr[-3000:]
  with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as f:
    results = json.load(f)
  return {"dir": output_dir, "first": first.stdout, "second": second.stdout,
          "mtimes": mtimes, "results": results}


def test_comparison_writes_every_output(comparison):
  for name in ("results.json", "results.md", "ndcg_per_task.png", "region_ndcg.png",
               "region_mask.png"):
    assert os.path.getsize(os.path.join(comparison["dir"], name)) > 0, name


def test_comparison_runs_distinct_configs(comparison):
  assert sorted(os.listdir(os.path.join(comparison["dir"], "runs"))) == [
      "mmoe-element-1", "mmoe-element-2", "mmoe-off-1", "mmoe-off-2",
      "seq-off-1", "seq-off-2", "seq_md-element-1", "seq_md-element-2"]


def test_comparison_prints_progress(comparison):
  assert "run 8/8 seq_md mask=element seed=2" in comparison["first"]
  assert "ETA" in comparison["first"]


def test_second_invocation_trains_nothing(comparison):
  assert comparison["second"].count("already finished, skipped") == 8
  for run, mtime in comparison["mtimes"].items():
    path = os.path.join(comparison["dir"], "runs", run, "metrics.json")
    assert os.path.getmtime(path) == mtime, run


def test_results_summary_matches_run_values(comparison):
  results = comparison["results"]
  values = [run["overall"]["purchase"]["ndcg@10"] for run in results["runs"]
            if run["model"] == "seq_md"]
  summary = results["summary"]["overall"]["purchase"]["ndcg@10"]["seq_md-element"]
  assert summary["mean"] == pytest.approx(np.mean(values))
  assert summary["n"] == 2
  assert summary["paired_vs_reference"]["seeds"] == [1, 2]


def test_results_markdown_has_claim_check(comparison):
  with open(os.path.join(comparison["dir"], "results.md"), encoding="utf-8") as f:
    text = f.read()
  assert "## Claim check" in text
  assert "| `seq_md` | element |" in text


def test_changed_settings_are_rejected(comparison):
  run_dir = os.path.join(comparison["dir"], "runs", "mmoe-off-1")
  with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
    settings = dict(json.load(f)["settings"], epochs=2)
  with pytest.raises(compare_runs.SettingsMismatchError,
                     match=r"was trained with other settings \(epochs: stored 1, now 2\)"):
    compare_runs.load_finished_run(run_dir, settings)
