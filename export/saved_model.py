"""Export a trained scorer as a SavedModel that TF Serving loads as it is.

Layout: `<export_dir>/<version>/` with a numeric version, as TF Serving expects. The model is
written to a hidden temporary directory beside it and renamed into place, so a server that polls
`<export_dir>` never sees a half-written version.
"""

import os
import shutil
import time
from typing import Optional

import tensorflow as tf
from absl import logging

from seqmd_tf.data import parse_elwc
from seqmd_tf.feature_spec import FeatureSpec
from seqmd_tf.model import SCORE_OUTPUT

SERVING_INPUT = "examples"


class ExportError(RuntimeError):
  """The export directory or version is not usable."""


class ServingModule(tf.Module):
  """Serving signatures around a scorer.

  `serving_default`: `examples` [batch_size] tf.string of serialized ELWC protos ->
  `score` and one output per task, each [batch_size, list_size] tf.float32 logits. Lists are
  padded or truncated to the spec's list_size by the same parser used in training; padded
  positions hold scores that a client ignores.
  """

  def __init__(self, scorer: tf.keras.Model, spec: FeatureSpec):
    super().__init__()
    self.scorer = scorer
    self._spec = spec
    self.serve = tf.function(
        self._serve,
        input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])

  def _serve(self, examples):
    features, _ = parse_elwc(examples, self._spec, with_labels=False)
    outputs = self.scorer(features, training=False)
    result = {SCORE_OUTPUT: outputs[SCORE_OUTPUT]}
    for task in self._spec.tasks:
      result[task] = outputs[task]
    return result


def next_version(export_dir: str) -> int:
  """Return a version number above every numeric version in `export_dir` (seconds since epoch
  unless a higher version already exists)."""
  existing = [int(d) for d in os.listdir(export_dir) if d.isdigit()] if os.path.isdir(export_dir) else []
  return max([int(time.time())] + [v + 1 for v in existing])


def export_saved_model(scorer: tf.keras.Model, spec: FeatureSpec, export_dir: str,
                       version: Optional[int] = None, overwrite: bool = False) -> str:
  """Write `scorer` to `<export_dir>/<version>` atomically and return that path."""
  os.makedirs(export_dir, exist_ok=True)
  version = next_version(export_dir) if version is None else int(version)
  if version < 0:
    raise ExportError(f"export version must be a non-negative integer, got {version}")
  final_dir = os.path.join(export_dir, str(version))
  if os.path.exists(final_dir) and not overwrite:
    raise ExportError(
        f"export version {final_dir} already exists; choose another version or allow overwriting")

  temp_dir = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(temp_dir, ignore_errors=True)
  module = ServingModule(scorer, spec)
  tf.saved_model.save(module, temp_dir, signatures={"serving_default": module.serve})
  if os.path.exists(final_dir):
    shutil.rmtree(final_dir)
  os.rename(temp_dir, final_dir)
  logging.info("exported SavedModel to %s", final_dir)
  return final_dir
