r"""Train a SEQ+MD (or baseline) re-ranker on ELWC TFRecords, evaluate it and export it.

Example:
  python -m seqmd_tf.train \
    --feature_spec=configs/trivago.json \
    --train_files='runs/demo/data/train/*.tfrecord' \
    --eval_files='runs/demo/data/eval/*.tfrecord' \
    --model_dir=runs/demo/model --export_dir=runs/demo/export

Re-running with the same --model_dir resumes from the last checkpoint: the end of the last
finished epoch, or with --checkpoint_every_steps the last checkpoint within an epoch.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from seqmd_tf import config as config_lib
from seqmd_tf.feature_spec import FeatureSpecError, load_feature_spec

FLAGS = flags.FLAGS

# Evaluation lists written into the export as TF Serving warm-up requests.
WARMUP_LISTS = 8
# Defaults of the expert and AITM flags, read from ModelConfig so that flags and config cannot
# disagree.
_MODEL_DEFAULTS = config_lib.ModelConfig()

flags.DEFINE_string("feature_spec", None, "Path of the dataset's feature spec JSON, e.g. configs/trivago.json.")
flags.DEFINE_string("train_files", None, "Comma-separated globs of training ELWC TFRecord files.")
flags.DEFINE_string("eval_files", None, "Comma-separated globs of evaluation ELWC TFRecord files; "
                    "evaluated after every epoch (TensorBoard) and, with --export_dir and "
                    "--final_evaluation, through the exported SavedModel at the end.")
flags.DEFINE_string("model_dir", None, "Directory for checkpoints (backup/), TensorBoard logs "
                    "(logs/), config.json, the final Keras scorer (scorer/) and the final evaluation "
                    "(eval.json, eval.md; see --final_evaluation).")
flags.DEFINE_string("export_dir", None, "Base directory of the SavedModel; it is written to "
                    "<export_dir>/<version>. Empty: no export.")
flags.DEFINE_enum("model", "seq_md", list(config_lib.MODEL_NAMES),
                  "Model architecture: seq_md (SEQ+MD), seq, or a baseline: single_task, "
                  "shared_bottom, mmoe, ple, adatt, esmm, aitm. Every model runs behind the MD "
                  "region mask unless --region_mask=off.")
flags.DEFINE_integer("list_size", None, "Items per list after padding/truncation; default: the "
                     "feature spec's list_size.")
flags.DEFINE_integer("batch_size", 64, "Lists per training step, the global batch: with "
                     "--strategy=mirrored or multi_worker each of the N replicas gets "
                     "batch_size / N lists (N must divide it); with parameter_server every "
                     "worker step uses batch_size lists.")
flags.DEFINE_integer("epochs", 5, "Passes over the training files.")
flags.DEFINE_integer("steps_per_epoch", None, "Batches per epoch; default: one pass over the files.")
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of --optimizer.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer: Adam, or plain SGD (whose "
                  "update is linear in the gradient, for reproducibility checks).")
flags.DEFINE_boolean("shuffle", True, "Shuffle the training files and lists; --noshuffle reads "
                     "them in file order, files interleaved one list at a time.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker",
                                          "parameter_server"],
                  "tf.distribute strategy; the cluster comes from the TF_CONFIG environment "
                  "variable. default: one device. mirrored: synchronous, the local GPUs. "
                  "multi_worker: synchronous, every chief and worker task of TF_CONFIG runs this "
                  "command and reads its own share of the files. parameter_server: "
                  "asynchronous, the chief task trains, worker and ps tasks run this command to "
                  "serve it.")
flags.DEFINE_enum("loss", "softmax", list(config_lib.LOSSES), "TF-Ranking listwise loss per task.")
flags.DEFINE_list("task_weights", None, "Listwise loss weight per task in funnel order, e.g. "
                  "1,1; default 1 for every task.")
flags.DEFINE_float("dpr_weight", 0.1, "Weight of the descending probability regularizer "
                   "(0 turns it off).")
flags.DEFINE_float("pointwise_weight", 0.1, "Weight of the per-task sigmoid cross-entropy that "
                   "keeps sigmoid(logit) a calibrated probability.")
flags.DEFINE_enum("region_mask", "element", list(config_lib.REGION_MASK_MODES),
                  "MD region mask: off, one scale per feature, or one per embedding element.")
flags.DEFINE_enum("mask_gate", "2sigmoid", list(config_lib.MASK_GATES),
                  "Mask activation: 2*sigmoid starts at 1.0 and can amplify; sigmoid only damps.")
flags.DEFINE_list("shared_units", ["128", "64"], "Widths of the shared per-item MLP.")
flags.DEFINE_float("dropout", 0.1, "Dropout rate in the shared MLP.")
flags.DEFINE_boolean("list_context", True, "Also feed each feature minus its list mean.")
flags.DEFINE_integer("gru_units", 32, "Hidden units of the GRU cell unrolled over the tasks.")
flags.DEFINE_integer("num_experts", _MODEL_DEFAULTS.num_experts,
                     "mmoe: number of experts shared by all tasks.")
flags.DEFINE_list("expert_units", [str(u) for u in _MODEL_DEFAULTS.expert_units],
                  "mmoe, ple, adatt: widths (units) of each expert's ReLU MLP, e.g. 128,64. PLE "
                  "and AdaTT use them at every level.")
flags.DEFINE_integer("num_task_experts", _MODEL_DEFAULTS.num_task_experts,
                     "ple, adatt: experts owned by each task, per level.")
flags.DEFINE_integer("num_shared_experts", _MODEL_DEFAULTS.num_shared_experts,
                     "ple, adatt: experts shared by all tasks, per level. PLE needs >= 1, and 0 "
                     "turns adatt into AdaTT-sp.")
flags.DEFINE_integer("ple_levels", _MODEL_DEFAULTS.ple_levels,
                     "ple: number of extraction layers. One layer is CGC.")
flags.DEFINE_integer("adatt_levels", _MODEL_DEFAULTS.adatt_levels,
                     "adatt: number of fusion levels.")
flags.DEFINE_integer("aitm_units", _MODEL_DEFAULTS.aitm_units,
                     "aitm: width (units) of the attention projections and output of the AIT "
                     "module that carries information from task t-1 to task t. The default "
                     "equals the last --shared_units width, as in the authors' code.")
flags.DEFINE_list("score_weights", None, "Serving score = sum of weight * task logit, one weight "
                  "per task in funnel order; default: the last task's logit.")
flags.DEFINE_integer("seed", 42, "Random seed for weights and shuffling.")
flags.DEFINE_integer("checkpoint_every_steps", None, "Training steps (batches) between two "
                     "checkpoints in <model_dir>/backup; a killed run started again with the same "
                     "flags resumes after the last one, within an epoch. Default: one checkpoint "
                     "at the end of each epoch.", lower_bound=1)
flags.DEFINE_integer("validate_records", 200, "Records checked at the head of each training and "
                     "evaluation file before training (the rules of python -m pipelines.validate); "
                     "an error stops the run with the report. 0 turns the check off.",
                     lower_bound=0)
flags.DEFINE_boolean("skip_bad_records", False, "Drop records that break the feature spec's "
                     "rules (not ELWC, wrong dtype or length, NaN, invalid label, empty list, "
                     "missing required feature) and the unreadable rest of a corrupt file, "
                     "instead of stopping; the number dropped is logged after each epoch.")
flags.DEFINE_boolean("final_evaluation", True, "After training, evaluate the exported "
                     "SavedModel on --eval_files and write <model_dir>/eval.json and eval.md. "
                     "Needs --export_dir and --eval_files.")
flags.DEFINE_integer("min_region_lists", 50, "Regions with fewer evaluation lists are pooled as "
                     "'other' in the final evaluation.")


def _ints(values, flag):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(
        f"--{flag} must be comma-separated integers, got {','.join(values)!r}") from None


def _floats(values, flag):
  if values is None:
    return None
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{flag} must be comma-separated numbers, got {','.join(values)!r}") from None


def configs_from_flags():
  """Return (ModelConfig, TrainConfig) from the parsed flags."""
  model_config = config_lib.ModelConfig(
      model=FLAGS.model, region_mask=FLAGS.region_mask, mask_gate=FLAGS.mask_gate,
      shared_units=tuple(int(u) for u in FLAGS.shared_units), dropout=FLAGS.dropout,
      list_context=FLAGS.list_context, gru_units=FLAGS.gru_units,
      num_experts=FLAGS.num_experts, expert_units=_ints(FLAGS.expert_units, "expert_units"),
      num_task_experts=FLAGS.num_task_experts, num_shared_experts=FLAGS.num_shared_experts,
      ple_levels=FLAGS.ple_levels, adatt_levels=FLAGS.adatt_levels, aitm_units=FLAGS.aitm_units,
      score_weights=_floats(FLAGS.score_weights, "score_weights"))
  train_config = config_lib.TrainConfig(
      loss=FLAGS.loss, task_weights=_floats(FLAGS.task_weights, "task_weights"),
      dpr_weight=FLAGS.dpr_weight, pointwise_weight=FLAGS.pointwise_weight,
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
      list_size=FLAGS.list_size, seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch)
  return model_config, train_config


def main(argv):
  del argv
  for name in ("feature_spec", "train_files", "model_dir"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required; see --help")
  try:
    spec = load_feature_spec(FLAGS.feature_spec)
    model_config, train_config = configs_from_flags()
    model_config.validate(len(spec.tasks))
    train_config.validate(len(spec.tasks))
  except (FeatureSpecError, ValueError) as e:
    raise app.UsageError(str(e)) from e

  # Imported here so that --help and flag errors do not wait for TensorFlow to load.
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import distribute  # pylint: disable=g-import-not-at-top
  from seqmd_tf import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import training  # pylint: disable=g-import-not-at-top

  try:
    task = distribute.cluster_task_from_env()
    distribute.check_cluster(FLAGS.strategy, task)
  except distribute.DistributeError as e:
    raise app.UsageError(str(e)) from e
  if distribute.runs_server(FLAGS.strategy, task):
    distribute.run_server(task)  # Returns only when the server stops.
    return
  distribution = distribute.create(FLAGS.strategy, task)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmd_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import validation  # pylint: disable=g-import-not-at-top

  paths = training.RunPaths(FLAGS.train_files, FLAGS.eval_files, FLAGS.model_dir, FLAGS.export_dir)
  fault_tolerance = training.FaultTolerance(
      checkpoint_every_steps=FLAGS.checkpoint_every_steps,
      validate_records=FLAGS.validate_records, skip_bad_records=FLAGS.skip_bad_records)
  try:
    trainer = training.train(spec, model_config, train_config, paths,
                             distribution=distribution, shuffle=FLAGS.shuffle,
                             optimizer=FLAGS.optimizer, fault_tolerance=fault_tolerance)
  except (data_lib.InputFilesError, distribute.DistributeError,
          training.IncompatibleResumeError) as e:
    raise app.UsageError(str(e)) from e
  except (validation.TrainingDataError, trainer_lib.NonFiniteLossError) as e:
    # The message names the file and record or the step; a traceback would add nothing.
    sys.exit(f"error: {e}")

  export_path = None
  if FLAGS.export_dir:
    from export import records  # pylint: disable=g-import-not-at-top
    warmup_lists = (records.read_serialized_lists(FLAGS.eval_files, WARMUP_LISTS, "--eval_files")
                    if FLAGS.eval_files else ())
    export_path = training.export(trainer, spec, FLAGS.export_dir, distribution,
                                  list_size=train_config.list_size or spec.list_size,
                                  warmup_lists=warmup_lists)
  if FLAGS.final_evaluation and FLAGS.eval_files and export_path:
    try:
      result = evaluate_lib.evaluate_saved_model(
          export_path, spec, FLAGS.eval_files, batch_size=train_config.batch_size,
          min_region_lists=FLAGS.min_region_lists)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      named = validation.locate_data_error(e, data_lib.list_files(FLAGS.eval_files), spec,
                                           train_config.list_size)
      if named is None:
        raise
      # The final evaluation reads every record, also with --skip_bad_records.
      sys.exit(f"error: the final evaluation of {export_path} failed: {named}")
    evaluate_lib.write_outputs(result, os.path.join(FLAGS.model_dir, "eval.json"),
                               title=f"{model_config.model} on {spec.name}")
  logging.info("done: model_dir=%s export=%s", FLAGS.model_dir, export_path)
  print(f"SavedModel: {export_path}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
