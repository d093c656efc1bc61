"""The runs of a model comparison: which to train, the validation cut, and one run in-process.

A run is one (model, region mask, seed). SEQ and SEQ+MD are one body (`seqmd_tf.models.seq`):
SEQ+MD is that body with the region mask on. So `seq` with a mask and `seq_md` without one are
not separate configurations. `canonical_config` maps both names to one run, named `seq` when the
mask is off and `seq_md` otherwise, and each distinct configuration is trained once per seed.
"""

import dataclasses
import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_ranking as tfr
from absl import logging

from seqmd_tf import callbacks as callbacks_lib
from seqmd_tf import data as data_lib
from seqmd_tf import metrics
from seqmd_tf import model as model_lib
from seqmd_tf import training
from seqmd_tf.config import ModelConfig, TrainConfig
from seqmd_tf.feature_spec import FeatureSpec

SEQ_MODELS = ("seq", "seq_md")
REGION_MASK_OFF = "off"
# Records scored per call of the scorer during evaluation, as in `seqmd_tf.evaluate`.
EVAL_BATCH_SIZE = 256
# Oracle metrics use this NDCG cutoff, the headline metric of every report.
ORACLE_CUTOFF = 10
# A finished run stores its record here, in its run directory.
METRICS_FILE = "metrics.json"


class SettingsMismatchError(ValueError):
  """A stored run was trained with other settings than the current comparison."""


@dataclasses.dataclass(frozen=True)
class RunKey:
  """One run of the comparison. `model` is the display name (see `canonical_config`)."""

  model: str
  mask: str
  seed: int

  @property
  def run_id(self) -> str:
    return f"{self.model}-{self.mask}-{self.seed}"

  @property
  def config_id(self) -> str:
    return f"{self.model}-{self.mask}"


def canonical_config(model: str, mask: str) -> str:
  """Return the display name of (model, mask): the SEQ body is `seq` without mask, else `seq_md`."""
  if model in SEQ_MODELS:
    return "seq" if mask == REGION_MASK_OFF else "seq_md"
  return model


def plan_runs(models: Sequence[str], masks: Sequence[str], seeds: Sequence[int]) -> List[RunKey]:
  """Return the distinct runs, seed-major, so a partial comparison has whole seeds first."""
  configs = []
  for model in models:
    for mask in masks:
      config = (canonical_config(model, mask), mask)
      if config not in configs:
        configs.append(config)
  return [RunKey(model, mask, seed) for seed in seeds for model, mask in configs]


def load_finished_run(run_dir: str, settings: dict) -> Optional[dict]:
  """Return the stored record of a finished run, or None when it has not finished.

  Raises SettingsMismatchError when the stored run was trained with other `settings`.
  """
  path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  stored = record.get("settings", {})
  differing = [key for key in settings if stored.get(key) != settings[key]]
  if differing:
    shown = ", ".join(f"{key}: stored {stored.get(key)!r}, now {settings[key]!r}"
                      for key in differing)
    raise SettingsMismatchError(
        f"{path} was trained with other settings ({shown}). Use another --output_dir, or "
        "delete that run directory to train it again")
  return record


# ----------------------------------------------------------------------------------------------
# Validation cut.


def read_in_write_order(file_pattern: str, flag_name: str) -> List[bytes]:
  """Return the records of sharded files in the order the converter wrote them.

  The converters in `pipelines/` deal the lists of a split to their shards round-robin (list i
  goes to shard i % num_shards), so taking record j of every shard in turn, for j = 0, 1, ...,
  restores the written order. The files are taken in sorted name order
  (part-00000-of-00002 first).
  """
  shards = []
  for path in data_lib.list_files(file_pattern, flag_name):
    shards.append([record.numpy() for record in tf.data.TFRecordDataset(path)])
  records = []
  for index in range(max((len(shard) for shard in shards), default=0)):
    records.extend(shard[index] for shard in shards if index < len(shard))
  return records


def validation_cut_size(num_lists: int, fraction: float) -> int:
  """Return round(fraction * num_lists), halves rounding up, as the converters' eval split."""
  return int(math.floor(fraction * num_lists + 0.5))


def write_validation_cut(train_files: str, fraction: float, output_dir: str) -> Dict[str, str]:
  """Split the training lists into a training part and the last `fraction` as validation.

  Writes `output_dir/train.tfrecord` and `output_dir/validation.tfrecord` and returns their
  paths with the list counts under "train_files", "eval_files", "train_lists" and
  "validation_lists". An existing cut with the same counts is reused.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"--validation_fraction must be in (0, 1), got {fraction}")
  records = read_in_write_order(train_files, "--train_files")
  num_validation = validation_cut_size(len(records), fraction)
  if num_validation == 0 or num_validation == len(records):
    raise ValueError(
        f"--validation_fraction={fraction} of the {len(records)} lists of "
        f"--train_files={train_files!r} leaves {num_validation} validation lists; choose a "
        "fraction that leaves at least one list on each side")
  os.makedirs(output_dir, exist_ok=True)
  parts = {"train": records[:-num_validation], "validation": records[-num_validation:]}
  paths = {}
  for name, part in parts.items():
    path = os.path.join(output_dir, f"{name}.tfrecord")
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
      for record in part:
        writer.write(record)
    os.replace(path + ".tmp", path)
    paths[name] = path
  logging.info("validation cut: %d training lists, the last %d as validation, in %s",
               len(parts["train"]), num_validation, output_dir)
  return {"train_files": paths["train"], "eval_files": paths["validation"],
          "train_lists": len(parts["train"]), "validation_lists": num_validation}


# ----------------------------------------------------------------------------------------------
# Evaluation in-process.


def _region_names(values: np.ndarray) -> np.ndarray:
  return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                   for v in values])


def _parse_oracle(serialized: tf.Tensor, spec: FeatureSpec,
                  oracle_features: Dict[str, str]) -> Dict[str, np.ndarray]:
  """Parse the float oracle features {task: [batch_size, list_size]}; -1 where missing."""
  parsing = {name: tf.io.FixedLenFeature([1], tf.float32, default_value=-1.0)
             for name in oracle_features.values()}
  parsed = tfr.data.parse_from_example_list(
      serialized, list_size=spec.list_size, context_feature_spec={},
      example_feature_spec=parsing)
  return {task: tf.squeeze(parsed[name], axis=-1).numpy()
          for task, name in oracle_features.items()}


def predict_lists(scorer: tf.keras.Model, spec: FeatureSpec, eval_files: str,
                  oracle_features: Optional[Dict[str, str]] = None,
                  batch_size: int = EVAL_BATCH_SIZE) -> Dict[str, np.ndarray]:
  """Score every list of `eval_files` with the in-process scorer.

  The records are parsed by `seqmd_tf.data.parse_elwc`, the parser of the serving signature,
  so the arrays equal those of `seqmd_tf.evaluate.collect_predictions` on the exported model.

  Returns:
    "mask" [num_lists, list_size] bool, "regions" [num_lists] str, "score",
    "label/<task>", "logits/<task>" and, with `oracle_features`, "oracle/<task>", each
    [num_lists, list_size] float32.
  """
  files = data_lib.list_files(eval_files, "--eval_files")
  chunks: Dict[str, list] = {}
  for serialized in tf.data.TFRecordDataset(files).batch(batch_size):
    features, labels = data_lib.parse_elwc(serialized, spec)
    outputs = scorer(features, training=False)
    values = {
        "mask": features[data_lib.MASK_FEATURE].numpy(),
        "regions": _region_names(features[spec.region_feature][:, 0].numpy()),
        "score": outputs["score"].numpy(),
    }
    for task in spec.tasks:
      values[f"label/{task}"] = labels[task].numpy()
      values[f"logits/{task}"] = outputs[task].numpy()
    if oracle_features:
      for task, oracle in _parse_oracle(serialized, spec, oracle_features).items():
        values[f"oracle/{task}"] = oracle
    for key, value in values.items():
      chunks.setdefault(key, []).append(value)
  if not chunks:
    raise ValueError(f"--eval_files={eval_files!r} contains no records")
  return {key: np.concatenate(parts) for key, parts in chunks.items()}


def oracle_metrics(arrays: Dict[str, np.ndarray], tasks: Sequence[str],
                   prefix: str) -> Dict[str, Dict[str, float]]:
  """Return NDCG@10 against the generator's true probabilities, per task.

  "model_oracle_ndcg@10": NDCG@10 of the ranking by the task's logit, with graded gain = the
  true probability of the task for each item (gain p, not 2**p - 1), normalized by the DCG of
  the items sorted by that probability. `metrics.ndcg_per_list` uses gain 2**label - 1, so it
  gets label log2(1 + p), whose gain is exactly p. Every list with a probability above 0 counts.
  "original_oracle_ndcg@10": the same for the original order.
  "oracle_ndcg@10": the ranking by the true probability, scored on the observed labels as any
  model is. It is the best a model can expect to reach on these labels, up to label noise.
  """
  mask = arrays["mask"]
  original = metrics.original_order_scores(mask)
  result = {}
  for task in tasks:
    probs = arrays[f"oracle/{task}"]
    missing = np.argwhere(mask & (probs < 0))
    if missing.size:
      list_index, position = missing[0]
      raise ValueError(
          f"--oracle_feature_prefix={prefix!r}: feature {prefix}{task} is missing at eval list "
          f"{list_index}, item {position} ({len(missing)} items in all). Every item needs it; "
          "pass the prefix only for data from pipelines.synthetic")
    gains_as_labels = np.log2(1.0 + np.where(mask, probs, 0.0))
    result[task] = {
        "model_oracle_ndcg@10": metrics.ndcg_at_k(
            gains_as_labels, arrays[f"logits/{task}"], mask, ORACLE_CUTOFF)[0],
        "original_oracle_ndcg@10": metrics.ndcg_at_k(
            gains_as_labels, original, mask, ORACLE_CUTOFF)[0],
        "oracle_ndcg@10": metrics.ndcg_at_k(
            arrays[f"label/{task}"], probs, mask, ORACLE_CUTOFF)[0],
    }
  return metrics.json_ready(result)


# ----------------------------------------------------------------------------------------------
# One run.


@dataclasses.dataclass
class RunSettings:
  """Everything shared by the runs of one comparison."""

  spec: FeatureSpec
  train_config: TrainConfig
  train_files: str
  eval_files: str
  min_region_lists: int = 50
  oracle_prefix: Optional[str] = None


def model_config_for(key: RunKey) -> ModelConfig:
  return ModelConfig(model=key.model, region_mask=key.mask)


def fit(spec: FeatureSpec, model_config: ModelConfig, train_config: TrainConfig,
        train_files: str):
  """Train a scorer the way `seqmd_tf.training.train` does and return the trainer.

  The steps are those of `training.train` in the same order: the global seed, the shuffled
  training data, `training.build_trainer`, the normalization statistics from
  `training.NORMALIZATION_BATCHES` unshuffled batches, then `fit`. It leaves out what does not
  change the weights: checkpoints, TensorBoard logs, per-epoch evaluation and the final save,
  which cost several seconds per run.
  """
  model_config.validate(len(spec.tasks))
  train_config.validate(len(spec.tasks))
  tf.keras.utils.set_random_seed(train_config.seed)
  list_size = train_config.list_size or spec.list_size
  train_data = data_lib.make_dataset(
      train_files, spec, train_config.batch_size, list_size=list_size, shuffle=True,
      seed=train_config.seed, flag_name="--train_files")
  trainer = training.build_trainer(spec, model_config, train_config)
  unshuffled = data_lib.make_dataset(train_files, spec, train_config.batch_size,
                                     list_size=list_size, flag_name="--train_files")
  model_lib.feature_encoder(trainer.scorer).adapt(unshuffled, training.NORMALIZATION_BATCHES)
  trainer.fit(train_data, epochs=train_config.epochs,
              steps_per_epoch=train_config.steps_per_epoch, verbose=0)
  return trainer


def train_and_evaluate(key: RunKey, settings: RunSettings, model_dir: str,
                       keep_model: bool = False) -> dict:
  """Train one run in-process with `fit`, evaluate it and return its record.

  The Keras session is cleared first, so runs do not share layers or name counters. With
  `keep_model` the final scorer is saved to `model_dir/scorer`.

  Returns:
    {"model", "mask", "seed", "train_seconds", "evaluation": the dict of
    `metrics.evaluate_lists`, "oracle": `oracle_metrics` or None, "region_mask": the learned
    mask {"matrix", "regions", "features"} or None}.
  """
  tf.keras.backend.clear_session()
  train_config = dataclasses.replace(settings.train_config, seed=key.seed)
  start = time.time()
  trainer = fit(settings.spec, model_config_for(key), train_config, settings.train_files)
  train_seconds = time.time() - start
  if keep_model:
    training.save_final_scorer(trainer.scorer, os.path.join(model_dir, "scorer"))

  oracle_features = None
  if settings.oracle_prefix:
    oracle_features = {task: settings.oracle_prefix + task for task in settings.spec.tasks}
  arrays = predict_lists(trainer.scorer, settings.spec, settings.eval_files, oracle_features)
  tasks = list(settings.spec.tasks)
  evaluation = metrics.evaluate_lists(
      {t: arrays[f"label/{t}"] for t in tasks}, {t: arrays[f"logits/{t}"] for t in tasks},
      arrays["score"], arrays["mask"], arrays["regions"],
      min_region_lists=settings.min_region_lists)
  oracle = oracle_metrics(arrays, tasks, settings.oracle_prefix) if oracle_features else None

  region_mask = None
  mask_matrix = callbacks_lib.region_mask_matrix(trainer.scorer)
  if mask_matrix is not None:
    matrix, regions, features = mask_matrix
    region_mask = {"matrix": metrics.json_ready(matrix), "regions": list(regions),
                   "features": list(features)}
  return {"model": key.model, "mask": key.mask, "seed": key.seed,
          "train_seconds": round(train_seconds, 1), "evaluation": evaluation,
          "oracle": oracle, "region_mask": region_mask}
