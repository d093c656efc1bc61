r"""Export a trained model for TF Serving, with warmup requests and server configuration.

Example:
  python -m export.export_model --model_dir=runs/demo/model \
    --export_base=runs/demo/serving --model_name=seqmd \
    --warmup_files='runs/demo/data/eval/*.tfrecord'

Rebuilds the scorer from `<model_dir>/config.json`, loads the final weights (`<model_dir>/scorer`,
or the newest checkpoint in `<model_dir>/backup` when training did not finish), and writes:
  <export_base>/<model_name>/<version>/   the SavedModel (signatures: see export/saved_model.py)
      assets.extra/tf_serving_warmup_requests
  <export_base>/models.config, models.docker.config, batching_parameters.txt, monitoring.config
An existing version is never replaced unless --overwrite is given.
"""

import os
import sys
from typing import Dict, Optional

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

# Lists read from the warmup files: enough for the requests of export/warmup.py.
DEFAULT_WARMUP_LISTS = 8


def export_from_model_dir(model_dir: str, export_base: str, model_name: str,
                          feature_spec: Optional[str] = None, version: Optional[int] = None,
                          overwrite: bool = False, warmup_files: Optional[str] = None,
                          num_warmup_lists: int = DEFAULT_WARMUP_LISTS) -> Dict[str, str]:
  """Export the run in `model_dir` to `<export_base>/<model_name>/<version>`.

  Args:
    model_dir: directory of a training run (config.json, scorer/ or backup/).
    export_base: directory holding one subdirectory per model and the server configs.
    model_name: the model's name in TF Serving (the URL path /v1/models/<model_name>).
    feature_spec: optional spec file, checked against the spec stored in config.json.
    version: numeric version; default: seconds since the epoch.
    overwrite: replace an existing version.
    warmup_files: globs of ELWC TFRecords for the warmup requests; default: the run's eval
      files; None and no eval files in the run: no warmup file.
    num_warmup_lists: lists read from `warmup_files`.

  Returns:
    {"saved_model": version directory, <config file name>: path, ...}.
  """
  # Imported here so that --help and flag errors do not wait for TensorFlow to load.
  from export import records  # pylint: disable=g-import-not-at-top
  from export import restore  # pylint: disable=g-import-not-at-top
  from export import saved_model  # pylint: disable=g-import-not-at-top
  from export import server_config  # pylint: disable=g-import-not-at-top

  run = restore.read_run(model_dir, feature_spec)
  scorer, _ = restore.restore_scorer(model_dir, run)

  warmup_lists = []
  warmup_files = warmup_files or run.eval_files
  if warmup_files:
    warmup_lists = records.read_serialized_lists(warmup_files, num_warmup_lists, "--warmup_files")
    logging.info("warmup requests from %d lists of %s", len(warmup_lists), warmup_files)
  else:
    logging.warning("no --warmup_files and no eval files in the run: the export has no warmup "
                    "requests, so the first requests after a load are slow")

  path = saved_model.export_saved_model(
      scorer, run.spec, os.path.join(export_base, model_name), version, overwrite,
      list_size=run.list_size, warmup_lists=warmup_lists, model_name=model_name)
  written = {"saved_model": path}
  written.update(server_config.write_server_configs(export_base))
  return written


def define_flags() -> None:
  flags.DEFINE_string("model_dir", None, "Directory of the training run: config.json and the "
                      "final scorer/ (or the checkpoints in backup/).")
  flags.DEFINE_string("feature_spec", None, "Feature spec JSON; must equal the spec stored in "
                      "<model_dir>/config.json. Default: the stored spec.")
  flags.DEFINE_string("export_base", None, "Base directory: the model goes to "
                      "<export_base>/<model_name>/<version>, the server configs beside it.")
  flags.DEFINE_string("model_name", None, "Model name in TF Serving, e.g. seqmd; clients call "
                      "/v1/models/<model_name>.")
  flags.DEFINE_integer("version", None, "Numeric version directory; default: seconds since the "
                       "epoch (always above the existing versions).", lower_bound=0)
  flags.DEFINE_boolean("overwrite", False, "Replace the version if it exists.")
  flags.DEFINE_string("warmup_files", None, "Comma-separated globs of ELWC TFRecord files for "
                      "the warmup requests. Default: the eval files of the training run.")
  flags.DEFINE_integer("num_warmup_lists", DEFAULT_WARMUP_LISTS, "Lists read for the warmup "
                       "requests.", lower_bound=1)


def main(argv):
  del argv
  for name in ("model_dir", "export_base", "model_name"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required; see --help")
  if FLAGS.model_name.isdigit() or "/" in FLAGS.model_name:
    raise app.UsageError(f"--model_name must be a name without '/' that is not a number, got "
                         f"{FLAGS.model_name!r}")

  from export.restore import RestoreError  # pylint: disable=g-import-not-at-top
  from export.saved_model import ExportError  # pylint: disable=g-import-not-at-top
  from seqmd_tf.data import InputFilesError  # pylint: disable=g-import-not-at-top
  from seqmd_tf.feature_spec import FeatureSpecError  # pylint: disable=g-import-not-at-top
  try:
    written = export_from_model_dir(
        FLAGS.model_dir, FLAGS.export_base, FLAGS.model_name, FLAGS.feature_spec, FLAGS.version,
        FLAGS.overwrite, FLAGS.warmup_files, FLAGS.num_warmup_lists)
  except (RestoreError, ExportError, InputFilesError, FeatureSpecError) as e:
    raise app.UsageError(str(e)) from e

  for name, path in written.items():
    print(f"{name}: {path}", file=sys.stderr)


if __name__ == "__main__":
  define_flags()
  app.run(main)
