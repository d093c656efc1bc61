"""Rebuild a training run's scorer from `<model_dir>/config.json` and its final weights.

`seqmd_tf.training.train` writes the resolved configuration to `<model_dir>/config.json`, saves
the trained scorer as a Keras SavedModel in `<model_dir>/scorer` when training ends, and
checkpoints with tf.keras.callbacks.BackupAndRestore in `<model_dir>/backup`. The weights come
from `scorer/`. A run without it (stopped before the end, or written by an older version) falls
back to the newest backup checkpoint, which contains the weights of the last finished epoch or
checkpoint interval. Keras writes those checkpoints under `backup/chief/` with the trainer as the
object named `model`, and the trainer tracks the scorer as `scorer`.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

import tensorflow as tf
from absl import logging

from seqmd_tf import model as model_lib
from seqmd_tf import training
from seqmd_tf.config import ModelConfig
from seqmd_tf.feature_spec import FeatureSpec, load_feature_spec, parse_feature_spec

CONFIG_FILENAME = "config.json"
# Subdirectory in which BackupAndRestore writes on a single worker (Keras 2.15).
KERAS_BACKUP_SUBDIR = "chief"
# Checkpoint key of the epoch counter BackupAndRestore stores beside the model.
_SAVED_EPOCH_KEY = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"


class RestoreError(RuntimeError):
  """The model directory cannot be turned back into a scorer; the message gives the reason."""


@dataclasses.dataclass
class TrainedRun:
  """The parts of a training run that the export uses."""

  spec: FeatureSpec
  model_config: ModelConfig
  list_size: int
  eval_files: Optional[str]


def read_run(model_dir: str, feature_spec_path: Optional[str] = None) -> TrainedRun:
  """Read `<model_dir>/config.json`.

  Args:
    model_dir: the --model_dir of the training run.
    feature_spec_path: a feature spec file that must equal the spec stored in config.json;
      None uses the stored spec.

  Raises:
    RestoreError: config.json is missing or unreadable, names a model option this code does
      not know, or differs from `feature_spec_path`.
  """
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not os.path.isfile(path):
    raise RestoreError(
        f"{path} not found; --model_dir must be the directory of a finished training run "
        "(python -m seqmd_tf.train --model_dir=...)")
  with open(path, encoding="utf-8") as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as e:
      raise RestoreError(f"{path}: not valid JSON: {e}") from e
  for key in ("model", "train", "feature_spec"):
    if key not in config:
      raise RestoreError(f"{path}: missing key {key!r}; it was not written by seqmd_tf.training")

  stored_spec = parse_feature_spec(config["feature_spec"], path=f"{path} (feature_spec)")
  spec = stored_spec
  if feature_spec_path:
    spec = load_feature_spec(feature_spec_path)
    if spec.to_json_dict() != stored_spec.to_json_dict():
      raise RestoreError(
          f"--feature_spec={feature_spec_path} differs from the spec the model was trained with "
          f"(stored in {path}); pass the training spec or leave --feature_spec out")

  model_config = model_config_from_dict(config["model"], path)
  list_size = config["train"].get("list_size") or spec.list_size
  return TrainedRun(spec=spec, model_config=model_config, list_size=int(list_size),
                    eval_files=config.get("eval_files"))


def model_config_from_dict(values: dict, path: str = CONFIG_FILENAME) -> ModelConfig:
  """Return the ModelConfig stored as a dict in config.json (JSON lists become tuples)."""
  known = {field.name for field in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise RestoreError(
        f"{path}: model options {unknown} are unknown to this version of seqmd_tf.config."
        "ModelConfig; export with the code version that trained the model")
  missing = sorted(known - set(values))
  if missing:
    logging.warning("%s: model options %s are missing; using their current defaults", path,
                    missing)
  converted = {key: tuple(value) if isinstance(value, list) else value
               for key, value in values.items()}
  return ModelConfig(**converted)


def latest_checkpoint(model_dir: str) -> str:
  """Return the newest BackupAndRestore checkpoint prefix of a run.

  Raises:
    RestoreError: the run wrote no checkpoint.
  """
  backup_dir = _run_paths(model_dir).backup_dir
  for directory in (os.path.join(backup_dir, KERAS_BACKUP_SUBDIR), backup_dir):
    checkpoint = tf.train.latest_checkpoint(directory)
    if checkpoint:
      return checkpoint
  raise RestoreError(
      f"no final scorer in {_run_paths(model_dir).final_scorer_dir} and no checkpoint found in "
      f"{backup_dir}/{KERAS_BACKUP_SUBDIR} or {backup_dir}; the run must finish training, or at "
      "least one epoch or checkpoint interval")


def restore_scorer(model_dir: str, run: TrainedRun) -> Tuple[tf.keras.Model, str]:
  """Build the scorer of `run` and load its final weights.

  Returns:
    (scorer, the path the weights were read from).

  Raises:
    RestoreError: no weights found, or a scorer variable has no value in them (the
      architecture in config.json differs from the one that was trained).
  """
  scorer = model_lib.build_scorer(run.spec, run.model_config)
  final_dir = _run_paths(model_dir).final_scorer_dir
  if os.path.isdir(final_dir):
    # A Keras SavedModel keeps its variables in a checkpoint rooted at the model.
    status = scorer.load_weights(os.path.join(final_dir, "variables", "variables"))
    _check_matched(status, final_dir, model_dir)
    logging.info("restored the final scorer weights from %s", final_dir)
    return scorer, final_dir

  checkpoint_path = latest_checkpoint(model_dir)
  logging.warning("%s not found (training did not finish, or an older version trained the "
                  "model); using the newest checkpoint %s", final_dir, checkpoint_path)
  # The checkpoint also contains the optimizer and metric state, but only the scorer is read.
  root = tf.train.Checkpoint(model=tf.train.Checkpoint(scorer=scorer))
  _check_matched(root.restore(checkpoint_path), checkpoint_path, model_dir)

  reader = tf.train.load_checkpoint(checkpoint_path)
  if reader.has_tensor(_SAVED_EPOCH_KEY):
    logging.info("restored scorer weights from %s (saved in epoch index %d)", checkpoint_path,
                 int(reader.get_tensor(_SAVED_EPOCH_KEY)))
  return scorer, checkpoint_path


def _check_matched(status, weights_path: str, model_dir: str) -> None:
  """Raise RestoreError unless every scorer variable got a value from `weights_path`."""
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise RestoreError(
        f"the weights in {weights_path} do not match the scorer built from "
        f"{os.path.join(model_dir, CONFIG_FILENAME)}: {e}") from e
  status.expect_partial()


def _run_paths(model_dir: str) -> training.RunPaths:
  """Return the paths seqmd_tf.training uses in `model_dir` (only the model_dir ones are set)."""
  return training.RunPaths(train_files="", eval_files=None, model_dir=model_dir)
