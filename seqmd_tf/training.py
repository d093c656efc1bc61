"""Train, evaluate and export a model: the library side of `python -m seqmd_tf.train`."""

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
from seqmd_tf import model as model_lib
from seqmd_tf.config import ModelConfig, TrainConfig, to_json
from seqmd_tf.feature_spec import FeatureSpec
from seqmd_tf.losses import MultiTaskRankingLoss
from seqmd_tf.trainer import RankingTrainer

# Batches read to measure the mean and variance of each normalized numeric feature.
NORMALIZATION_BATCHES = 50


@dataclasses.dataclass
class RunPaths:
  """Where a training run reads and writes."""

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


def build_trainer(spec: FeatureSpec, model_config: ModelConfig,
                  train_config: TrainConfig) -> RankingTrainer:
  """Build the scorer, wrap it with the multi-task loss and compile it."""
  scorer = model_lib.build_scorer(spec, model_config)
  loss = MultiTaskRankingLoss(
      task_names=list(spec.tasks), listwise_loss=train_config.loss,
      task_weights=train_config.task_weights, pointwise_weight=train_config.pointwise_weight,
      dpr_weight=train_config.dpr_weight)
  trainer = RankingTrainer(scorer, spec.tasks, loss, name="trainer")
  trainer.compile(optimizer=tf.keras.optimizers.Adam(train_config.learning_rate))
  return trainer


def train(spec: FeatureSpec, model_config: ModelConfig, train_config: TrainConfig,
          paths: RunPaths, verbose: int = 2) -> RankingTrainer:
  """Train with checkpoints in `paths.model_dir`; a re-run with the same directory resumes.

  Returns the trainer, whose `scorer` holds the final weights.
  """
  model_config.validate(len(spec.tasks))
  train_config.validate(len(spec.tasks))
  tf.keras.utils.set_random_seed(train_config.seed)
  os.makedirs(paths.model_dir, exist_ok=True)
  with open(os.path.join(paths.model_dir, "config.json"), "w", encoding="utf-8") as f:
    f.write(to_json(model_config, train_config, train_files=paths.train_files,
                    eval_files=paths.eval_files, feature_spec=spec.to_json_dict()))

  list_size = train_config.list_size or spec.list_size
  train_data = data_lib.make_dataset(
      paths.train_files, spec, train_config.batch_size, list_size=list_size, shuffle=True,
      seed=train_config.seed, flag_name="--train_files")
  eval_data = None
  if paths.eval_files:
    eval_data = data_lib.make_dataset(paths.eval_files, spec, train_config.batch_size,
                                      list_size=list_size, flag_name="--eval_files")

  trainer = build_trainer(spec, model_config, train_config)
  unshuffled = data_lib.make_dataset(paths.train_files, spec, train_config.batch_size,
                                     list_size=list_size, flag_name="--train_files")
  moments = model_lib.feature_encoder(trainer.scorer).adapt(unshuffled, NORMALIZATION_BATCHES)
  logging.info("normalization statistics from %d batches: %s", NORMALIZATION_BATCHES,
               json.dumps({k: [round(v, 4) for v in mv] for k, mv in moments.items()}))

  callbacks = [
      # Restores weights, optimizer state and the epoch counter when the directory holds a
      # backup, so a re-run (or a run restarted after being killed) continues where it stopped.
      tf.keras.callbacks.BackupAndRestore(paths.backup_dir, save_freq="epoch",
                                          delete_checkpoint=False),
      tf.keras.callbacks.TensorBoard(paths.log_dir, update_freq="epoch"),
      callbacks_lib.LearningRateLogger(os.path.join(paths.log_dir, "train")),
      callbacks_lib.RegionMaskImage(trainer.scorer, os.path.join(paths.log_dir, "train")),
      callbacks_lib.ProgressLogger(train_config.epochs),
  ]
  logging.info("training %s for %d epochs (seed %d), checkpoints in %s",
               model_config.model, train_config.epochs, train_config.seed, paths.backup_dir)
  trainer.fit(train_data, validation_data=eval_data, epochs=train_config.epochs,
              steps_per_epoch=train_config.steps_per_epoch, callbacks=callbacks, verbose=verbose)
  save_final_scorer(trainer.scorer, paths.final_scorer_dir)
  return trainer


def save_final_scorer(scorer: tf.keras.Model, path: str) -> None:
  """Save the trained scorer in Keras SavedModel format (loadable by tf.keras.models.load_model
  with no custom_objects), replacing an earlier copy only once the new one is complete."""
  temp_path = path + ".tmp"
  shutil.rmtree(temp_path, ignore_errors=True)
  scorer.save(temp_path, include_optimizer=False)
  shutil.rmtree(path, ignore_errors=True)
  os.rename(temp_path, path)
  logging.info("saved the final scorer to %s", path)


def export(trainer: RankingTrainer, spec: FeatureSpec, export_dir: str) -> str:
  """Export the trained scorer to `<export_dir>/<version>` and return that path."""
  return export_saved_model(trainer.scorer, spec, export_dir)
