"""Export a trained scorer as a SavedModel that TF Serving loads as it is.

Layout: `<export_dir>/<version>/` with a numeric version, as TF Serving expects. The model is
written to a hidden temporary directory beside it and renamed into place, so a server that polls
`<export_dir>` never loads a half-written version.

Signatures (outputs are logits: a higher value ranks the item higher):
  serving_default: `examples` [batch_size] tf.string of serialized ELWC protos ->
    `score` and one output per task, each [batch_size, list_size] tf.float32.
  predict_examples: `context` [] tf.string, one serialized context tf.Example, and `examples`
    [num_items] tf.string, the serialized item tf.Examples of one list in shown order ->
    the same outputs with batch_size 1.

Lists are padded or truncated to `list_size` by the parser used in training
(`seqmd_tf.data.parse_elwc`): a longer list keeps its first `list_size` items, and the scores at
padded positions carry no meaning. A feature missing from a request takes its spec default.
"""

import os
import shutil
import time
from typing import Optional, Sequence

import tensorflow as tf
from absl import logging

from export import serving_inputs
from export import warmup as warmup_lib
from seqmd_tf.data import MASK_FEATURE, parse_elwc
from seqmd_tf.feature_spec import FeatureSpec
from seqmd_tf.model import SCORE_OUTPUT

SERVING_INPUT = "examples"
CONTEXT_INPUT = "context"
DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"


class ExportError(RuntimeError):
  """The export directory or version is not usable."""


class ServingModule(tf.Module):
  """Serving signatures around a scorer; see the module docstring for their contract."""

  def __init__(self, scorer: tf.keras.Model, spec: FeatureSpec, list_size: Optional[int] = None):
    super().__init__()
    self.scorer = scorer
    self._spec = spec
    self._list_size = list_size or spec.list_size
    self.serve = tf.function(
        self._serve,
        input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    self.serve_examples = tf.function(
        self._serve_examples,
        input_signature=[tf.TensorSpec([], tf.string, name=CONTEXT_INPUT),
                         tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])

  def signatures(self) -> dict:
    return {DEFAULT_SIGNATURE: self.serve, EXAMPLES_SIGNATURE: self.serve_examples}

  def _serve(self, examples):
    with tf.control_dependencies([serving_inputs.check_elwc_first_byte(examples)]):
      examples = tf.identity(examples)
    features, _ = parse_elwc(examples, self._spec, self._list_size, with_labels=False)
    outputs = self.scorer(features, training=False)

    # The check depends on the parsed mask; tying it to every output makes TF run it before
    # any score leaves the graph.
    with tf.control_dependencies([serving_inputs.check_lists_have_items(features[MASK_FEATURE])]):
      result = {SCORE_OUTPUT: tf.identity(outputs[SCORE_OUTPUT])}
      for task in self._spec.tasks:
        result[task] = tf.identity(outputs[task])
    return result

  def _serve_examples(self, context, examples):
    return self._serve(serving_inputs.build_elwc(context, examples))


def next_version(export_dir: str) -> int:
  """Return a version number above every numeric version in `export_dir` (seconds since epoch
  unless a higher version already exists)."""
  existing = [int(d) for d in os.listdir(export_dir) if d.isdigit()] if os.path.isdir(export_dir) else []
  return max([int(time.time())] + [v + 1 for v in existing])


def export_saved_model(scorer: tf.keras.Model, spec: FeatureSpec, export_dir: str,
                       version: Optional[int] = None, overwrite: bool = False, *,
                       list_size: Optional[int] = None,
                       warmup_lists: Sequence[bytes] = (), model_name: str = "") -> str:
  """Write `scorer` to `<export_dir>/<version>` atomically and return that path.

  Args:
    scorer: the model of `seqmd_tf.model.build_scorer`, with its final weights.
    spec: the feature spec the scorer was trained with.
    export_dir: the model's base path, the directory TF Serving polls for versions.
    version: numeric version; default: `next_version(export_dir)`.
    overwrite: replace an existing version. Without it an existing version raises ExportError.
    list_size: items per list after padding or truncation; default `spec.list_size`. Pass the
      training value when training overrode the spec's list_size.
    warmup_lists: serialized ELWC lists for `assets.extra/tf_serving_warmup_requests`; empty
      writes no warmup file.
    model_name: model name put in the warmup requests.

  Raises:
    ExportError: the version is negative, or it exists and `overwrite` is False.
  """
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
  try:
    module = ServingModule(scorer, spec, list_size)
    tf.saved_model.save(module, temp_dir, signatures=module.signatures())
    if warmup_lists:
      warmup_lib.write_warmup_file(temp_dir, warmup_lib.warmup_records(warmup_lists, model_name))
    _move_into_place(temp_dir, final_dir)
  except BaseException:
    shutil.rmtree(temp_dir, ignore_errors=True)
    raise
  logging.info("exported SavedModel to %s", final_dir)
  return final_dir


def _move_into_place(temp_dir: str, final_dir: str) -> None:
  """Rename `temp_dir` to `final_dir`; an existing `final_dir` is moved aside first."""
  if not os.path.exists(final_dir):
    os.rename(temp_dir, final_dir)
    return
  # rename(2) cannot replace a non-empty directory, so the old version is moved aside first.
  # NOTE: between the two renames the version is missing; a server that polls at that moment
  # unloads it until its next poll.
  old_dir = f"{temp_dir}-replaced"
  os.rename(final_dir, old_dir)
  os.rename(temp_dir, final_dir)
  shutil.rmtree(old_dir, ignore_errors=True)
