r"""Evaluate an exported SavedModel on ELWC TFRecords, per task and per region.

Example:
  python -m seqmd_tf.evaluate --saved_model=runs/demo/export/1733000000 \
    --feature_spec=configs/trivago.json --eval_files='runs/demo/data/eval/*.tfrecord' \
    --output_json=runs/demo/eval.json

The model is called through its `serving_default` signature on the serialized records, exactly
as TF Serving would call it. Labels, the item mask and the region come from the same parser.
Writes the JSON and a markdown table beside it (same name, `.md`), and prints a summary.
"""

import os
import sys
from typing import Dict

import numpy as np
from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

# Records scored per call of the serving signature.
DEFAULT_BATCH_SIZE = 256


def collect_predictions(saved_model_dir: str, spec, eval_files: str,
                        batch_size: int = DEFAULT_BATCH_SIZE) -> Dict[str, np.ndarray]:
  """Score every list of `eval_files` with the SavedModel's serving signature.

  Returns numpy arrays over all lists: "mask" [num_lists, list_size] bool, "regions"
  [num_lists] str, "label/<task>" and "logits/<task>" [num_lists, list_size] float32 and "score".
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top

  loaded = tf.saved_model.load(saved_model_dir)
  if "serving_default" not in loaded.signatures:
    raise ValueError(f"SavedModel {saved_model_dir} has no serving_default signature")
  serve = loaded.signatures["serving_default"]
  files = data_lib.list_files(eval_files, "--eval_files")
  records = tf.data.TFRecordDataset(files).batch(batch_size)

  chunks: Dict[str, list] = {}
  num_lists = 0
  for serialized in records:
    features, labels = data_lib.parse_elwc(serialized, spec)
    outputs = serve(examples=serialized)
    region = features[spec.region_feature][:, 0].numpy()
    values = {
        "mask": features[data_lib.MASK_FEATURE].numpy(),
        "regions": np.array([r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r)
                             for r in region]),
        "score": outputs["score"].numpy(),
    }
    for task in spec.tasks:
      values[f"label/{task}"] = labels[task].numpy()
      values[f"logits/{task}"] = outputs[task].numpy()
    for key, value in values.items():
      chunks.setdefault(key, []).append(value)
    num_lists += len(region)
    if num_lists % (20 * batch_size) == 0:
      logging.info("scored %d lists", num_lists)
  if not chunks:
    raise ValueError(f"--eval_files={eval_files!r} contains no records; convert data first "
                     "with python -m pipelines.<dataset>")
  return {key: np.concatenate(parts) for key, parts in chunks.items()}


def evaluate_saved_model(saved_model_dir: str, spec, eval_files: str,
                         batch_size: int = DEFAULT_BATCH_SIZE, min_region_lists: int = 50) -> dict:
  """Return the evaluation dict of `seqmd_tf.metrics.evaluate_lists` for a SavedModel."""
  from seqmd_tf import metrics  # pylint: disable=g-import-not-at-top

  arrays = collect_predictions(saved_model_dir, spec, eval_files, batch_size)
  labels = {task: arrays[f"label/{task}"] for task in spec.tasks}
  logits = {task: arrays[f"logits/{task}"] for task in spec.tasks}
  result = metrics.evaluate_lists(labels, logits, arrays["score"], arrays["mask"],
                                  arrays["regions"], min_region_lists=min_region_lists)
  result["saved_model"] = saved_model_dir
  result["eval_files"] = eval_files
  result["tasks"] = list(spec.tasks)
  return result


def write_outputs(result: dict, output_json: str, title: str) -> str:
  """Write the JSON and markdown reports, print the summary, and return the markdown path."""
  from seqmd_tf import report  # pylint: disable=g-import-not-at-top

  markdown_path = os.path.splitext(output_json)[0] + ".md"
  os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
  report.write_report(result, output_json, markdown_path, title=title)
  print(report.format_summary(result))
  print(f"evaluation written to {output_json} and {markdown_path}")
  return markdown_path


def main(argv):
  del argv
  from seqmd_tf.feature_spec import FeatureSpecError, load_feature_spec  # pylint: disable=g-import-not-at-top
  for name in ("saved_model", "feature_spec", "eval_files", "output_json"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required; see --help")
  if not os.path.isfile(os.path.join(FLAGS.saved_model, "saved_model.pb")):
    raise app.UsageError(
        f"--saved_model={FLAGS.saved_model!r} contains no saved_model.pb; pass a version directory "
        "such as runs/demo/export/<version>")
  try:
    spec = load_feature_spec(FLAGS.feature_spec)
  except FeatureSpecError as e:
    raise app.UsageError(str(e)) from e
  from seqmd_tf.data import InputFilesError  # pylint: disable=g-import-not-at-top
  try:
    result = evaluate_saved_model(FLAGS.saved_model, spec, FLAGS.eval_files, FLAGS.batch_size,
                                  FLAGS.min_region_lists)
  except InputFilesError as e:
    raise app.UsageError(str(e)) from e
  write_outputs(result, FLAGS.output_json, title=f"SavedModel {FLAGS.saved_model} on {spec.name}")
  sys.stdout.flush()


if __name__ == "__main__":
  flags.DEFINE_string("saved_model", None, "SavedModel version directory, e.g. runs/demo/export/1733000000.")
  flags.DEFINE_string("feature_spec", None, "Feature spec JSON the model was trained with.")
  flags.DEFINE_string("eval_files", None, "Comma-separated globs of ELWC TFRecord files.")
  flags.DEFINE_string("output_json", None, "Path of the JSON report; the markdown goes beside it.")
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Lists per call of the serving signature.")
  flags.DEFINE_integer("min_region_lists", 50, "Regions with fewer lists are pooled as 'other'.")
  app.run(main)
