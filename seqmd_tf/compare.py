r"""Compare models: train every (model, region mask, seed) with one budget, then report.

Example:
  python -m seqmd_tf.compare --feature_spec=configs/trivago.json \
    --train_files='runs/compare/trivago/data/train/*.tfrecord' \
    --eval_files='runs/compare/trivago/data/eval/*.tfrecord' \
    --models=single_task,mmoe,seq_md --region_mask=off,element --seeds=3 --epochs=3 \
    --output_dir=runs/compare/trivago/out

Writes to --output_dir:
  runs/<model>-<mask>-<seed>/metrics.json  one finished run (a re-run skips it)
  results.json, results.md                 every run's metrics and the summary over seeds
  ndcg_per_task.png, region_ndcg.png, region_mask.png

A re-run with the same flags trains only the runs that have not finished, and --report_only
writes the results of the finished runs without training.

Every run is trained in this process as `seqmd_tf.training.train` trains it (see
`compare_runs.fit`) and evaluated with `seqmd_tf.metrics.evaluate_lists` on the scorer's outputs
for the parsed evaluation records, which gives the numbers of `python -m seqmd_tf.evaluate` on
the exported model. No checkpoint is written; --keep_models saves each final scorer to
runs/<id>/model/scorer.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from seqmd_tf import config as config_lib

FLAGS = flags.FLAGS

flags.DEFINE_string("feature_spec", None, "Path of the dataset's feature spec JSON, e.g. "
                    "configs/trivago.json.")
flags.DEFINE_string("train_files", None, "Comma-separated globs of training ELWC TFRecord files.")
flags.DEFINE_string("eval_files", None, "Comma-separated globs of evaluation ELWC TFRecord files. "
                    "Not read when --validation_fraction is set.")
flags.DEFINE_list("models", list(config_lib.MODEL_NAMES), "Models to compare, e.g. mmoe,seq_md.")
flags.DEFINE_list("region_mask", ["off", "element"], "Region mask modes to run every model with, "
                  f"from {', '.join(config_lib.REGION_MASK_MODES)}.")
flags.DEFINE_integer("seeds", 3, "Number of seeds per configuration: --first_seed, "
                     "--first_seed + 1, ...", lower_bound=1)
flags.DEFINE_integer("first_seed", 1, "First seed.")
flags.DEFINE_string("output_dir", None, "Directory of the results and of the per-run metrics.")
flags.DEFINE_integer("epochs", 3, "Passes over the training files, the same for every run.")
flags.DEFINE_integer("steps_per_epoch", None, "Batches per epoch; default: one pass.")
flags.DEFINE_integer("batch_size", 64, "Lists per training batch.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_enum("loss", "softmax", list(config_lib.LOSSES), "TF-Ranking listwise loss per task.")
flags.DEFINE_float("dpr_weight", 0.1, "Weight of the descending probability regularizer.")
flags.DEFINE_float("pointwise_weight", 0.1, "Weight of the per-task sigmoid cross-entropy.")
flags.DEFINE_integer("min_region_lists", 50, "Regions with fewer evaluation lists are pooled as "
                     "'other'.", lower_bound=1)
flags.DEFINE_string("oracle_feature_prefix", None, "Synthetic data only: prefix of the float "
                    "example features that hold each task's true probability (oracle_ gives "
                    "oracle_click, ...). Adds the oracle NDCG to the report.")
flags.DEFINE_float("validation_fraction", None, "Train on the first lists of --train_files and "
                   "evaluate on the last fraction of them (in the order the converter wrote "
                   "them), e.g. 0.2. Use it to choose hyper-parameters without the eval split.")
flags.DEFINE_boolean("report_only", False, "Train nothing: write the results of the runs that "
                     "already finished, e.g. while a long comparison is still running.")
flags.DEFINE_boolean("keep_models", False, "Save each run's final scorer (Keras SavedModel) to "
                     "runs/<id>/model/scorer.")

# Settings that must match for a stored run to be reused by a later invocation.
_RUN_SETTING_KEYS = ("feature_spec", "train_files", "eval_files", "validation_fraction", "epochs",
                     "steps_per_epoch", "batch_size", "learning_rate", "loss", "dpr_weight",
                     "pointwise_weight", "min_region_lists", "oracle_feature_prefix")


def _check_flags() -> None:
  for name in ("feature_spec", "train_files", "output_dir"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required; see --help")
  if FLAGS.validation_fraction is None and not FLAGS.eval_files:
    raise app.UsageError("--eval_files is required unless --validation_fraction is set")
  if FLAGS.validation_fraction is not None and not 0 < FLAGS.validation_fraction < 1:
    raise app.UsageError(f"--validation_fraction must be in (0, 1), got "
                         f"{FLAGS.validation_fraction}")
  unknown = [m for m in FLAGS.models if m not in config_lib.MODEL_NAMES]
  if unknown or not FLAGS.models:
    raise app.UsageError(f"--models must be names from {', '.join(config_lib.MODEL_NAMES)}, got "
                         f"{','.join(FLAGS.models)!r}")
  unknown = [m for m in FLAGS.region_mask if m not in config_lib.REGION_MASK_MODES]
  if unknown or not FLAGS.region_mask:
    raise app.UsageError(f"--region_mask must be modes from "
                         f"{', '.join(config_lib.REGION_MASK_MODES)}, got "
                         f"{','.join(FLAGS.region_mask)!r}")


def run_settings_record() -> dict:
  """Return the flags every run of this comparison shares, as stored with each run."""
  record = {key: getattr(FLAGS, key) for key in _RUN_SETTING_KEYS}
  if FLAGS.validation_fraction is not None:
    record["eval_files"] = None
  return record


def _write_json(path: str, value) -> None:
  """Write JSON through a temporary file, so a killed run never leaves half a file."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, sort_keys=True, allow_nan=False)
    f.write("\n")
  os.replace(path + ".tmp", path)


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_all(keys, settings, run_settings: dict, output_dir: str) -> list:
  """Train and evaluate every run not yet stored, printing progress; return all records."""
  from seqmd_tf import compare_runs  # pylint: disable=g-import-not-at-top

  def load_finished(run_dir):
    try:
      return compare_runs.load_finished_run(run_dir, run_settings)
    except compare_runs.SettingsMismatchError as e:
      raise app.UsageError(str(e)) from e

  records, trained_seconds, trained = [], 0.0, 0
  finished = {k: load_finished(os.path.join(output_dir, "runs", k.run_id)) for k in keys}
  to_train = sum(record is None for record in finished.values())
  start = time.time()
  for index, key in enumerate(keys, start=1):
    run_dir = os.path.join(output_dir, "runs", key.run_id)
    # Checked again here because another process may have finished the run meanwhile.
    record = finished[key] or load_finished(run_dir)
    label = f"run {index}/{len(keys)} {key.model} mask={key.mask} seed={key.seed}"
    if record is not None:
      print(f"{label}: already finished, skipped", flush=True)
      records.append(record)
      continue
    if FLAGS.report_only:
      print(f"{label}: not finished, left out (--report_only)", flush=True)
      continue
    run_start = time.time()
    record = compare_runs.train_and_evaluate(key, settings, os.path.join(run_dir, "model"),
                                             keep_model=FLAGS.keep_models)
    record["settings"] = run_settings
    _write_json(os.path.join(run_dir, compare_runs.METRICS_FILE), record)
    records.append(record)

    trained += 1
    trained_seconds += time.time() - run_start
    eta = trained_seconds / trained * (to_train - trained)
    last_task = settings.spec.tasks[-1]
    ndcg = record["evaluation"]["overall"][last_task]["model"]["ndcg@10"]
    print(f"{label}: {last_task} NDCG@10 {ndcg:.4f} in {time.time() - run_start:.0f} s; "
          f"elapsed {_minutes(time.time() - start)}, ETA {_minutes(eta)}", flush=True)
  return records


def main(argv):
  del argv
  _check_flags()
  from seqmd_tf.feature_spec import FeatureSpecError, load_feature_spec  # pylint: disable=g-import-not-at-top
  try:
    spec = load_feature_spec(FLAGS.feature_spec)
  except FeatureSpecError as e:
    raise app.UsageError(str(e)) from e

  # Imported here so that --help and flag errors do not wait for TensorFlow to load.
  from seqmd_tf import compare_report  # pylint: disable=g-import-not-at-top
  from seqmd_tf import compare_runs  # pylint: disable=g-import-not-at-top
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top

  train_files, eval_files = FLAGS.train_files, FLAGS.eval_files
  evaluated_on = f"the evaluation files `{eval_files}`"
  try:
    if FLAGS.validation_fraction is not None:
      cut = compare_runs.write_validation_cut(
          train_files, FLAGS.validation_fraction, os.path.join(FLAGS.output_dir, "validation_cut"))
      train_files, eval_files = cut["train_files"], cut["eval_files"]
      evaluated_on = (f"the validation cut: the last {cut['validation_lists']} of the "
                      f"{cut['train_lists'] + cut['validation_lists']} training lists in the "
                      f"order the converter wrote them (--validation_fraction "
                      f"{FLAGS.validation_fraction}); the eval split was not read")
    train_config = config_lib.TrainConfig(
        loss=FLAGS.loss, dpr_weight=FLAGS.dpr_weight, pointwise_weight=FLAGS.pointwise_weight,
        learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch)
    train_config.validate(len(spec.tasks))
  except (data_lib.InputFilesError, ValueError) as e:
    raise app.UsageError(str(e)) from e

  settings = compare_runs.RunSettings(spec, train_config, train_files, eval_files,
                                      FLAGS.min_region_lists, FLAGS.oracle_feature_prefix)
  seeds = list(range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds))
  keys = compare_runs.plan_runs(FLAGS.models, FLAGS.region_mask, seeds)
  run_settings = run_settings_record()
  logging.info("comparison of %d runs in %s", len(keys), FLAGS.output_dir)
  try:
    records = run_all(keys, settings, run_settings, FLAGS.output_dir)
  except data_lib.InputFilesError as e:
    raise app.UsageError(str(e)) from e

  if not records:
    raise app.UsageError(f"--output_dir={FLAGS.output_dir!r} contains no finished run to report; "
                         "run without --report_only first")
  report_settings = dict(run_settings, dataset=spec.name, seeds=seeds, evaluated_on=evaluated_on,
                         models=FLAGS.models, region_masks=FLAGS.region_mask)
  paths = compare_report.write_outputs(records, keys, list(spec.tasks), report_settings,
                                       FLAGS.output_dir)
  print("results: " + ", ".join(paths), flush=True)


if __name__ == "__main__":
  app.run(main)
