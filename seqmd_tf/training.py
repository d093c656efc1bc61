"""Train, evaluate and export a model: the library side of `python -m seqmd_tf.train`."""

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Optional

import tensorflow as tf
from absl import logging

from export.saved_model import export_saved_model
from seqmd_tf import callbacks as callbacks_lib
from seqmd_tf import data as data_lib
from seqmd_tf import distribute as distribute_lib
from seqmd_tf import model as model_lib
from seqmd_tf import validation
from seqmd_tf.config import ModelConfig, TrainConfig, to_json
from seqmd_tf.feature_spec import FeatureSpec
from seqmd_tf.losses import MultiTaskRankingLoss
from seqmd_tf.trainer import NonFiniteLossGuard, RankingTrainer, checkpointed_step

# Batches read to measure the mean and variance of each normalized numeric feature.
NORMALIZATION_BATCHES = 50

# Values of --optimizer. Plain SGD makes an update linear in the gradient, which lets a test
# compare a multi-worker run with a single-process one; Adam is the default for real training.
OPTIMIZERS = {"adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD}


@dataclasses.dataclass
class FaultTolerance:
  """Settings of the start-up data check, bad-record skipping and checkpoints (same-named flags)."""

  # Steps between two checkpoints; None writes one at the end of each epoch.
  checkpoint_every_steps: Optional[int] = None
  # Records checked at start-up at the head of each training and evaluation file; 0: none.
  validate_records: int = 200
  # Drop records that break an error rule of seqmd_tf.validation instead of failing.
  skip_bad_records: bool = False


@dataclasses.dataclass
class RunPaths:
  """Input file patterns and output directories of one training run."""

  train_files: str
  eval_files: Optional[str]
  model_dir: str
  export_dir: Optional[str] = None

  @property
  def backup_dir(self) -> str:
    return os.path.join(self.model_dir, "backup")

  @property
  def log_dir(self) -> str:
    return os.path.join(self.model_dir, "logs")

  @property
  def final_scorer_dir(self) -> str:
    return os.path.join(self.model_dir, "scorer")


# TensorFlow's random_seed.get_seed compares (global seed, op seed) with (0, 0) in Python, which
# fails inside tf.data functions whose op seed is a tensor (the per-pass shuffle seeds) when the
# global seed is 0 (TF 2.15). Seed 0 therefore sets this global TF seed instead.
_GLOBAL_SEED_FOR_ZERO = 2**31 - 2


def set_seeds(seed: int) -> None:
  """Seed Python, numpy and TensorFlow from one --seed value."""
  tf.keras.utils.set_random_seed(seed)
  if seed % (2**31 - 1) == 0:
    tf.random.set_seed(_GLOBAL_SEED_FOR_ZERO)


class IncompatibleResumeError(ValueError):
  """--model_dir contains a checkpoint of a different architecture or feature spec."""


def check_resume_compatible(paths: RunPaths, model_config: ModelConfig, spec: FeatureSpec) -> None:
  """Raise IncompatibleResumeError when `paths.model_dir` has a checkpoint whose config.json
  gives another architecture or feature spec than this run, since restoring it would fail."""
  config_path = os.path.join(paths.model_dir, "config.json")
  if not (os.path.isdir(paths.backup_dir) and os.listdir(paths.backup_dir)
          and os.path.isfile(config_path)):
    return
  with open(config_path, encoding="utf-8") as f:
    previous = json.load(f)
  current = json.loads(to_json(model_config, TrainConfig(), feature_spec=spec.to_json_dict()))
  changed = sorted(
      f"--{key}" for key in set(previous.get("model", {})) | set(current["model"])
      if previous.get("model", {}).get(key) != current["model"].get(key))
  if previous.get("feature_spec") != current["feature_spec"]:
    changed.append("--feature_spec (its contents)")
  if changed:
    raise IncompatibleResumeError(
        f"--model_dir={paths.model_dir} contains a checkpoint trained with other settings: "
        f"{', '.join(changed)} changed (see {config_path}). Use a new --model_dir, or delete "
        f"{paths.backup_dir} to start this model_dir over.")


def build_trainer(spec: FeatureSpec, model_config: ModelConfig, train_config: TrainConfig,
                  optimizer: str = "adam") -> RankingTrainer:
  """Build the scorer, wrap it with the multi-task loss and compile it with the optimizer
  named by `optimizer` (a key of OPTIMIZERS). Call under `strategy.scope()` to distribute it."""
  scorer = model_lib.build_scorer(spec, model_config)
  loss = MultiTaskRankingLoss(
      task_names=list(spec.tasks), listwise_loss=train_config.loss,
      task_weights=train_config.task_weights, pointwise_weight=train_config.pointwise_weight,
      dpr_weight=train_config.dpr_weight)
  trainer = RankingTrainer(scorer, spec.tasks, loss, name="trainer")
  trainer.compile(optimizer=OPTIMIZERS[optimizer](train_config.learning_rate))
  return trainer


def train(spec: FeatureSpec, model_config: ModelConfig, train_config: TrainConfig,
          paths: RunPaths, verbose: int = 2, *,
          distribution: Optional[distribute_lib.Distribution] = None, shuffle: bool = True,
          optimizer: str = "adam",
          fault_tolerance: Optional[FaultTolerance] = None) -> RankingTrainer:
  """Train with checkpoints in `paths.model_dir`; a re-run with the same directory resumes.

  The training data is an endless sequence of seeded passes over the files (see
  `seqmd_tf.data.make_dataset`), and a resumed run skips the batches that the checkpoint has
  trained on, so it sees the batches an uninterrupted run would see. `fault_tolerance` sets
  the start-up data check, bad-record skipping and the checkpoint interval
  (docs/reliability.md).

  Under a multi_worker `distribution` every chief and worker task calls this function with the
  same arguments; only the chief writes to `paths.model_dir` (see seqmd_tf.distribute). Without
  `shuffle` the lists are read in file order, files interleaved one list at a time.

  Returns the trainer, whose `scorer` holds the final weights.
  """
  distribution = distribution or distribute_lib.local()
  fault_tolerance = fault_tolerance or FaultTolerance()
  model_config.validate(len(spec.tasks))
  train_config.validate(len(spec.tasks))
  distribution.check_training(train_config.batch_size,
                              len(data_lib.list_files(paths.train_files, "--train_files")))
  set_seeds(train_config.seed)
  if distribution.is_chief:
    os.makedirs(paths.model_dir, exist_ok=True)
    check_resume_compatible(paths, model_config, spec)
    with open(os.path.join(paths.model_dir, "config.json"), "w", encoding="utf-8") as f:
      f.write(to_json(model_config, train_config, train_files=paths.train_files,
                      eval_files=paths.eval_files, feature_spec=spec.to_json_dict(),
                      strategy=distribution.name, cluster=dict(distribution.task.cluster),
                      optimizer=optimizer, shuffle=shuffle,
                      fault_tolerance=dataclasses.asdict(fault_tolerance)))

  list_size = train_config.list_size or spec.list_size
  skip_bad_records = fault_tolerance.skip_bad_records
  with _named_data_errors(paths, spec, list_size):
    validation.check_before_training(
        paths.train_files, paths.eval_files, spec, list_size, fault_tolerance.validate_records,
        skip_bad_records)
    steps_per_epoch = train_config.steps_per_epoch or _batches_per_pass(
        paths.train_files, train_config.batch_size, spec if skip_bad_records else None)
  start_batch = checkpointed_step(paths.backup_dir) or 0
  if start_batch:
    logging.info("resuming from the checkpoint after step %d in %s: the training data skips "
                 "its first %d batches", start_batch, paths.backup_dir, start_batch)
  # Counting needs variables that tf.data updates in this process; the input pipelines of
  # multi_worker and parameter_server run elsewhere, so they skip bad records uncounted.
  train_bad_records = eval_bad_records = None
  if skip_bad_records and not distribution.is_multi_worker:
    train_bad_records = data_lib.BadRecordCounter("train")
    eval_bad_records = data_lib.BadRecordCounter("eval")

  def training_dataset(input_context: Optional[tf.distribute.InputContext] = None):
    # --batch_size is global; each input pipeline batches its replicas' share of it.
    batch_size = (input_context.get_per_replica_batch_size(train_config.batch_size)
                  if input_context else train_config.batch_size)
    return data_lib.make_dataset(
        paths.train_files, spec, batch_size, list_size=list_size, shuffle=shuffle,
        repeat=True, seed=distribution.shuffle_seed(train_config.seed),
        flag_name="--train_files", input_context=input_context, start_batch=start_batch,
        skip_bad_records=skip_bad_records, bad_records=train_bad_records)

  train_data = distribution.training_input(training_dataset)
  eval_data = None
  if paths.eval_files:
    eval_data = data_lib.make_dataset(paths.eval_files, spec, train_config.batch_size,
                                      list_size=list_size, flag_name="--eval_files",
                                      skip_bad_records=skip_bad_records,
                                      bad_records=eval_bad_records)
  eval_data = distribution.validation_input(eval_data)

  with distribution.strategy.scope():
    trainer = build_trainer(spec, model_config, train_config, optimizer)
  if distribution.name == "parameter_server" and distribution.is_chief:
    distribute_lib.write_variable_devices(
        trainer.scorer, os.path.join(paths.model_dir, "variable_devices.json"))
  # Unsharded and unshuffled with the global batch size: every worker reads the same first
  # batches, so all compute identical statistics, equal to a single process's.
  unshuffled = data_lib.make_dataset(paths.train_files, spec, train_config.batch_size,
                                     list_size=list_size, flag_name="--train_files",
                                     skip_bad_records=skip_bad_records)
  with _named_data_errors(paths, spec, list_size):
    moments = model_lib.feature_encoder(trainer.scorer).adapt(unshuffled, NORMALIZATION_BATCHES)
  logging.info("normalization statistics from %d batches: %s", NORMALIZATION_BATCHES,
               json.dumps({k: [round(v, 4) for v in mv] for k, mv in moments.items()}))

  callbacks = [
      # First, so that it raises before BackupAndRestore can save the weights of a NaN step.
      NonFiniteLossGuard(paths.backup_dir),
      # Restores weights, optimizer state and the epoch and step counters when the directory
      # holds a backup, so a re-run (or a run restarted after being killed) continues where it
      # stopped.
      tf.keras.callbacks.BackupAndRestore(
          paths.backup_dir, save_freq=fault_tolerance.checkpoint_every_steps or "epoch",
          delete_checkpoint=False),
      tf.keras.callbacks.TensorBoard(paths.log_dir, update_freq="epoch"),
      callbacks_lib.LearningRateLogger(os.path.join(paths.log_dir, "train")),
      callbacks_lib.RegionMaskImage(trainer.scorer, os.path.join(paths.log_dir, "train")),
      callbacks_lib.ProgressLogger(train_config.epochs),
  ]
  if skip_bad_records:
    callbacks.append(SkippedRecordsLogger(train_bad_records, eval_bad_records))
  if not distribution.is_chief:
    # BackupAndRestore and TensorBoard send a non-chief worker's writes to temporary
    # directories themselves; these two summary writers would add duplicate event files.
    callbacks = [c for c in callbacks if not isinstance(
        c, (callbacks_lib.LearningRateLogger, callbacks_lib.RegionMaskImage))]
  callbacks = distribution.supported_callbacks(callbacks)
  logging.info("training %s for %d epochs (seed %d), checkpoints in %s",
               model_config.model, train_config.epochs, train_config.seed, paths.backup_dir)
  with _named_data_errors(paths, spec, list_size):
    trainer.fit(train_data, validation_data=eval_data, epochs=train_config.epochs,
                steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose)
  with distribution.write_dir(paths.final_scorer_dir) as scorer_dir:
    save_final_scorer(trainer.scorer, scorer_dir)
  return trainer


def _batches_per_pass(train_files: str, batch_size: int,
                      skip_bad_records_spec: Optional[FeatureSpec]) -> int:
  """Return the batches of one pass over the training files: ceil(records / batch_size).

  With --skip_bad_records (`skip_bad_records_spec` set) this reads and checks every record
  once, and counts only the records that training keeps.
  """
  files = data_lib.list_files(train_files, "--train_files")
  bad_records = data_lib.BadRecordCounter("train") if skip_bad_records_spec else None
  records = data_lib.count_records(files, skip_bad_records_spec, bad_records)
  if skip_bad_records_spec is not None:
    logging.warning("--skip_bad_records: %d of the %d readable training records break the "
                    "feature spec's rules and are skipped in every epoch", bad_records.skipped,
                    int(bad_records.read.numpy()))
  if records == 0:
    raise validation.TrainingDataError(
        f"--train_files={train_files!r} contains no record that training can use")
  batches = -(-records // batch_size)
  logging.info("%d training records in %d files: %d steps per epoch", records, len(files),
               batches)
  return batches


@contextlib.contextmanager
def _named_data_errors(paths: RunPaths, spec: FeatureSpec, list_size: int):
  """Re-raise TensorFlow's data errors as TrainingDataError naming the file and record."""
  try:
    yield
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
    files = data_lib.list_files(paths.train_files, "--train_files")
    if paths.eval_files:
      files += data_lib.list_files(paths.eval_files, "--eval_files")
    named = validation.locate_data_error(error, files, spec, list_size)
    if named is None:
      raise
    raise named from error


class SkippedRecordsLogger(tf.keras.callbacks.Callback):
  """Log after each epoch how many bad records --skip_bad_records has dropped so far."""

  def __init__(self, train_records: Optional[data_lib.BadRecordCounter],
               eval_records: Optional[data_lib.BadRecordCounter]):
    super().__init__()
    self._counters = [c for c in (train_records, eval_records) if c is not None]

  def on_epoch_end(self, epoch, logs=None):
    for counter in self._counters:
      # The input pipeline reads ahead of training, so the counts run ahead of the epoch.
      logging.warning("epoch %d: skipped %d bad %s records of the %d read so far "
                      "(--skip_bad_records)", epoch + 1, counter.skipped, counter.name,
                      int(counter.read.numpy()))
    if not self._counters:
      logging.warning("epoch %d: bad records are skipped but not counted under this "
                      "strategy (--skip_bad_records)", epoch + 1)


def save_final_scorer(scorer: tf.keras.Model, path: str) -> None:
  """Save the trained scorer in Keras SavedModel format (loadable by tf.keras.models.load_model
  with no custom_objects), replacing an earlier copy only once the new one is complete."""
  temp_path = path + ".tmp"
  shutil.rmtree(temp_path, ignore_errors=True)
  scorer.save(temp_path, include_optimizer=False)
  shutil.rmtree(path, ignore_errors=True)
  os.rename(temp_path, path)
  logging.info("saved the final scorer to %s", path)


def export(trainer: RankingTrainer, spec: FeatureSpec, export_dir: str,
           distribution: Optional[distribute_lib.Distribution] = None, *,
           list_size: Optional[int] = None, warmup_lists=()) -> Optional[str]:
  """Export the trained scorer to `<export_dir>/<version>` and return that path.

  Under a multi_worker `distribution` every chief and worker task calls this function. Only the
  chief's export is kept; the others export into a temporary directory, delete it and return None.
  `list_size` is the training list size (default: the spec's); `warmup_lists` are serialized ELWC
  lists written as TF Serving warm-up requests.
  """
  distribution = distribution or distribute_lib.local()
  with distribution.write_dir(export_dir) as target_dir:
    export_path = export_saved_model(trainer.scorer, spec, target_dir, list_size=list_size,
                                     warmup_lists=warmup_lists)
  return export_path if distribution.is_chief else None
