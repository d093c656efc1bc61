r"""Check ELWC TFRecords against a feature spec before training on them.

Usage:
  python -m pipelines.validate --feature_spec=configs/trivago.json \
    --files='runs/demo/data/train/*.tfrecord,runs/demo/data/eval/*.tfrecord'

Prints the number of records with each problem and the first offending records with their
file, record index and byte offset. The exit status is 1 when there is an error, 0 when there
are only warnings or nothing. The rules are listed in seqmd_tf/validation.py and
docs/reliability.md.
"""

import json
import sys
from typing import Sequence

from absl import app
from absl import flags

from seqmd_tf.feature_spec import FeatureSpecError, load_feature_spec

FLAGS = flags.FLAGS

flags.DEFINE_string("feature_spec", None, "Path of the dataset's feature spec JSON, e.g. "
                    "configs/trivago.json.")
flags.DEFINE_string("files", None, "Comma-separated globs of ELWC TFRecord files.")
flags.DEFINE_integer("list_size", None, "Items per list after truncation, as passed to training "
                     "with --list_size; default: the feature spec's list_size.", lower_bound=1)
flags.DEFINE_integer("max_records_per_file", None, "Check only the first records of each file; "
                     "default: every record.", lower_bound=1)
flags.DEFINE_integer("max_examples", 5, "Offending records shown per problem kind.",
                     lower_bound=0)
flags.DEFINE_string("output_json", None, "Also write the report as JSON to this path.")

EXIT_ERRORS = 1


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for name in ("feature_spec", "files"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required; see --help")
  try:
    spec = load_feature_spec(FLAGS.feature_spec)
  except FeatureSpecError as error:
    raise app.UsageError(str(error)) from error

  # Imported after flag checks, so that --help and flag errors do not wait for TensorFlow.
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import validation  # pylint: disable=g-import-not-at-top

  try:
    files = data_lib.list_files(FLAGS.files, "--files")
  except data_lib.InputFilesError as error:
    raise app.UsageError(str(error)) from error
  report = validation.validate_files(
      files, spec, list_size=FLAGS.list_size, max_records_per_file=FLAGS.max_records_per_file,
      max_examples=FLAGS.max_examples)
  print(report.format())
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w", encoding="utf-8") as output:
      json.dump(report.to_dict(), output, indent=2)
      output.write("\n")
  if report.has_errors:
    sys.exit(EXIT_ERRORS)


if __name__ == "__main__":
  app.run(main)
