"""Check ELWC TFRecords against a feature spec and report every bad record.

`python -m pipelines.validate` runs these checks over whole files; training runs them over the
first records of each file at start-up (`--validate_records`). `seqmd_tf.data.is_valid_record`
applies the same error rules inside the tf.data pipeline when training runs with
`--skip_bad_records`, and `tests/test_reliability_validation.py` checks that both drop the same
records.

A record has errors when TensorFlow cannot parse it with the spec, or when its values break
the rules of the spec:

  corrupt_file              the TFRecord framing is truncated or fails its checksum; TensorFlow's
                            reader stops there, so the rest of the file cannot be read
  not_elwc                  the bytes do not parse as an ExampleListWithContext proto
  no_known_features         the list contains none of the spec's features or task labels
  empty_list                the list has no items
  missing_required_feature  a feature marked "required" in the spec is absent
  wrong_dtype               a feature contains another value type than the spec's dtype
  wrong_length              a single-valued feature (or a label) has 0 or 2+ values
  non_finite_value          a float feature is NaN or infinite
  invalid_label             a label is not 0, 1 or -1 (missing)

Warnings do not stop training:

  list_too_long             more items than list_size; the items after list_size are dropped
  region_out_of_vocabulary  the region is absent or not in the vocabulary; it is encoded with
                            the out-of-vocabulary bucket

Dataset errors are found over all checked records:

  no_records                the files contain no record
  task_labels_all_missing   no checked record has a label 0 or 1 for a task
"""

import collections
import dataclasses
import math
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from google.protobuf import message as protobuf_message
from tensorflow_serving.apis import input_pb2

from seqmd_tf.feature_spec import Feature, FeatureSpec
from seqmd_tf.losses import PADDING_LABEL

ERROR = "error"
WARNING = "warning"

CORRUPT_FILE = "corrupt_file"
NOT_ELWC = "not_elwc"
NO_KNOWN_FEATURES = "no_known_features"
EMPTY_LIST = "empty_list"
MISSING_REQUIRED = "missing_required_feature"
WRONG_DTYPE = "wrong_dtype"
WRONG_LENGTH = "wrong_length"
NON_FINITE = "non_finite_value"
INVALID_LABEL = "invalid_label"
LIST_TOO_LONG = "list_too_long"
REGION_OOV = "region_out_of_vocabulary"
NO_RECORDS = "no_records"
TASK_ALL_MISSING = "task_labels_all_missing"

# Kind -> (severity, what the product does with such a record), in report order.
PROBLEMS = {
    CORRUPT_FILE: (ERROR, "the rest of the file cannot be read"),
    NOT_ELWC: (ERROR, "not an ExampleListWithContext proto"),
    NO_KNOWN_FEATURES: (ERROR, "contains none of the spec's features or labels"),
    EMPTY_LIST: (ERROR, "a list with no items has nothing to rank"),
    MISSING_REQUIRED: (ERROR, "a required feature is absent"),
    WRONG_DTYPE: (ERROR, "TensorFlow cannot parse a value of another type"),
    WRONG_LENGTH: (ERROR, "TensorFlow cannot parse a single-valued feature with 0 or 2+ values"),
    NON_FINITE: (ERROR, "NaN or infinite float value"),
    INVALID_LABEL: (ERROR, "labels must be 0, 1 or -1 (missing)"),
    LIST_TOO_LONG: (WARNING, "items after list_size are dropped"),
    REGION_OOV: (WARNING, "encoded with the out-of-vocabulary bucket"),
    NO_RECORDS: (ERROR, "nothing to train or evaluate on"),
    TASK_ALL_MISSING: (ERROR, "the task has no label 0 or 1, so it cannot be trained"),
}

# Labels a record may hold: 0 and 1, and PADDING_LABEL for a missing label.
ALLOWED_LABELS = (PADDING_LABEL, 0, 1)

# TFRecord framing: an 8-byte length and a 4-byte checksum before the data, a 4-byte checksum
# after it.
TFRECORD_OVERHEAD_BYTES = 16

# The value list of a tf.train.Feature for each spec dtype.
_KIND_OF_DTYPE = {"string": "bytes_list", "int64": "int64_list", "float": "float_list"}
_DTYPE_OF_KIND = {kind: dtype for dtype, kind in _KIND_OF_DTYPE.items()}
_OFFSET_IN_TF_MESSAGE = re.compile(r"record at (\d+)")


@dataclasses.dataclass(frozen=True)
class Problem:
  """One broken rule in one record (or one file, or the whole dataset)."""

  kind: str
  detail: str

  @property
  def severity(self) -> str:
    return PROBLEMS[self.kind][0]


@dataclasses.dataclass(frozen=True)
class Occurrence:
  """Location of a problem: the file, the 0-based record index and its byte offset."""

  path: str
  index: Optional[int]
  offset: Optional[int]
  problem: Problem

  def location(self) -> str:
    if self.index is None and self.offset is None:
      return self.path
    where = f"{self.path} record {self.index}" if self.index is not None else self.path
    return f"{where} (byte {self.offset})" if self.offset is not None else where


@dataclasses.dataclass
class RecordCheck:
  """The result of check_record: the problems and the tasks with a label 0 or 1."""

  problems: List[Problem]
  labelled_tasks: Tuple[str, ...]

  @property
  def has_error(self) -> bool:
    return any(p.severity == ERROR for p in self.problems)


# Problems that make TensorFlow's parser or reader raise, so that training stops at them.
RAISES_IN_TENSORFLOW = (CORRUPT_FILE, NOT_ELWC, WRONG_DTYPE, WRONG_LENGTH)


class TrainingDataError(ValueError):
  """Training or evaluation data cannot be used; the message names the file and record."""


class DataValidationError(TrainingDataError):
  """The start-up check found errors; the message contains the full report."""

  def __init__(self, message: str, report: "ValidationReport"):
    super().__init__(message)
    self.report = report


# ------------------------------------------------------------------------------------------------
# One record.


def check_record(serialized: bytes, spec: FeatureSpec,
                 list_size: Optional[int] = None) -> RecordCheck:
  """Check one serialized ELWC against `spec`; `list_size` defaults to the spec's."""
  list_size = list_size or spec.list_size
  elwc = input_pb2.ExampleListWithContext()
  try:
    elwc.ParseFromString(serialized)
  except protobuf_message.DecodeError as error:
    return RecordCheck([Problem(NOT_ELWC, f"does not parse as ExampleListWithContext: {error}")],
                       ())

  problems: List[Problem] = []
  context = elwc.context.features.feature
  for feature in spec.context_features:
    problems.extend(_check_feature(context, feature, "context feature"))
  problems.extend(_check_region(context, spec))

  labelled = set()
  for item_index, example in enumerate(elwc.examples):
    values = example.features.feature
    where = f"item {item_index}"
    for feature in spec.example_features:
      problems.extend(_check_feature(values, feature, f"example feature of {where},"))
    for task in spec.tasks:
      problem, label = _check_label(values, task, where)
      if problem is not None:
        problems.append(problem)
      elif label in (0, 1):
        labelled.add(task)

  num_items = len(elwc.examples)
  if num_items == 0:
    problems.append(Problem(EMPTY_LIST, "the list has 0 items"))
  elif num_items > list_size:
    problems.append(Problem(
        LIST_TOO_LONG, f"{num_items} items, more than list_size {list_size}; the last "
        f"{num_items - list_size} are dropped"))
  if num_items and not _holds_known_feature(elwc, spec):
    problems.append(Problem(
        NO_KNOWN_FEATURES, f"none of the spec's features or labels in the context or in "
        f"{num_items} items; was the record written for another feature spec?"))
  return RecordCheck(problems, tuple(t for t in spec.tasks if t in labelled))


def _present_kind(feature_proto) -> Optional[str]:
  """Return the value list a tf.train.Feature holds, or None for a feature with no value list.

  TensorFlow parses a feature without a value list as missing, so it takes its default.
  """
  return feature_proto.WhichOneof("kind")


def _values(feature_proto, kind: str) -> Sequence:
  return getattr(feature_proto, kind).value


def _check_feature(feature_map, feature: Feature, what: str) -> List[Problem]:
  """Check one spec feature in a context or item feature map."""
  name = feature.name
  kind = _present_kind(feature_map[name]) if name in feature_map else None
  if kind is None:
    if feature.required:
      return [Problem(MISSING_REQUIRED, f"{what} {name!r} is absent and the spec marks it "
                      "required")]
    return []

  expected = _KIND_OF_DTYPE[feature.dtype]
  if kind != expected:
    return [Problem(WRONG_DTYPE, f"{what} {name!r} has {_DTYPE_OF_KIND[kind]} values, the "
                    f"spec says {feature.dtype}")]
  values = _values(feature_map[name], kind)
  if feature.multivalent:
    if feature.required and not values:
      return [Problem(MISSING_REQUIRED, f"{what} {name!r} has no value and the spec marks it "
                      "required")]
    return []
  if len(values) != 1:
    return [Problem(WRONG_LENGTH, f"{what} {name!r} has {len(values)} values, expected 1")]
  if feature.dtype == "float" and not math.isfinite(values[0]):
    return [Problem(NON_FINITE, f"{what} {name!r} is {values[0]}")]
  return []


def _check_label(feature_map, task: str, where: str) -> Tuple[Optional[Problem], int]:
  """Return (problem or None, label value); a missing label is PADDING_LABEL."""
  kind = _present_kind(feature_map[task]) if task in feature_map else None
  if kind is None:
    return None, PADDING_LABEL
  if kind != "int64_list":
    return Problem(WRONG_DTYPE, f"label {task!r} of {where} has {_DTYPE_OF_KIND[kind]} "
                   "values, labels are int64"), PADDING_LABEL
  values = _values(feature_map[task], kind)
  if len(values) != 1:
    return Problem(WRONG_LENGTH, f"label {task!r} of {where} has {len(values)} values, "
                   "expected 1"), PADDING_LABEL
  if values[0] not in ALLOWED_LABELS:
    return Problem(INVALID_LABEL, f"label {task!r} of {where} is {values[0]}, allowed 0, 1 or "
                   f"{PADDING_LABEL} (missing)"), PADDING_LABEL
  return None, values[0]


def _check_region(context, spec: FeatureSpec) -> List[Problem]:
  region = spec.region
  if region.name not in context or _present_kind(context[region.name]) is None:
    return [Problem(REGION_OOV, f"region feature {region.name!r} is absent")]
  kind = _present_kind(context[region.name])
  values = _values(context[region.name], kind)
  if kind != _KIND_OF_DTYPE[region.dtype] or len(values) != 1:
    return []  # _check_feature reports it.
  value = values[0]
  if region.dtype == "string":
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError:
      return [Problem(REGION_OOV, f"region {values[0][:40]!r} is not valid UTF-8")]
  if value in region.vocabulary:
    return []
  shown = value if len(str(value)) <= 40 else f"{str(value)[:40]}... ({len(value)} characters)"
  return [Problem(REGION_OOV, f"region {shown!r} is not in the vocabulary")]


def _holds_known_feature(elwc, spec: FeatureSpec) -> bool:
  def holds(feature_map, names):
    return any(name in feature_map and _present_kind(feature_map[name]) is not None
               for name in names)

  if holds(elwc.context.features.feature, [f.name for f in spec.context_features]):
    return True
  example_names = [f.name for f in spec.example_features] + list(spec.tasks)
  return any(holds(example.features.feature, example_names) for example in elwc.examples)


# ------------------------------------------------------------------------------------------------
# Reading files.


def read_records(path: str, max_records: Optional[int] = None) -> Iterator[tuple]:
  """Yield (index, byte offset, serialized record) of a TFRecord file, then a corrupt part.

  When TensorFlow's reader fails (a truncated file or a checksum mismatch), the last item is
  (None, byte offset, Problem(CORRUPT_FILE, ...)) and reading stops, because TFRecord framing
  gives no way to find the next record.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  dataset = tf.data.TFRecordDataset(path)
  if max_records is not None:
    dataset = dataset.take(max_records)
  offset = 0
  iterator = iter(dataset.as_numpy_iterator())
  index = 0
  while True:
    try:
      record = next(iterator)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as error:
      message = _first_line(error)
      match = _OFFSET_IN_TF_MESSAGE.search(message)
      bad_offset = int(match.group(1)) if match else offset
      yield None, bad_offset, Problem(
          CORRUPT_FILE, f"TensorFlow cannot read past byte {bad_offset} after {index} records "
          f"({message}); the rest of the file is lost. Re-create the file, for example by "
          "running the converter again")
      return
    yield index, offset, record
    offset += len(record) + TFRECORD_OVERHEAD_BYTES
    index += 1


def _first_line(error: Exception) -> str:
  """Return TensorFlow's error text without the op and function names it wraps it in."""
  text = getattr(error, "message", None) or str(error)
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
  text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text.strip().splitlines()[0] if text.strip() else "")
  return text.strip()


# ------------------------------------------------------------------------------------------------
# Report.


class ValidationReport:
  """Counts of each problem over the checked records, with the first offending records."""

  def __init__(self, spec: FeatureSpec, list_size: Optional[int] = None,
               max_examples: int = 3):
    self.spec = spec
    self.list_size = list_size or spec.list_size
    self.max_examples = max_examples
    self.records = 0
    self.bad_records = 0  # records with at least one error
    self.records_per_file: Dict[str, int] = {}
    self.counts: collections.Counter = collections.Counter()  # kind -> records
    self.examples: Dict[str, List[Occurrence]] = collections.defaultdict(list)
    self.labelled: collections.Counter = collections.Counter()  # task -> records
    self.finished = False

  def add_record(self, path: str, index: int, offset: int, check: RecordCheck) -> None:
    self.records += 1
    self.records_per_file[path] = self.records_per_file.get(path, 0) + 1
    self.bad_records += int(check.has_error)
    for task in check.labelled_tasks:
      self.labelled[task] += 1
    for kind in dict.fromkeys(p.kind for p in check.problems):
      self.counts[kind] += 1
    for problem in check.problems:
      self._add_example(Occurrence(path, index, offset, problem))

  def add_problem(self, occurrence: Occurrence) -> None:
    """Count a problem of a file or of the dataset rather than of one record."""
    self.counts[occurrence.problem.kind] += 1
    self._add_example(occurrence)

  def _add_example(self, occurrence: Occurrence) -> None:
    shown = self.examples[occurrence.problem.kind]
    if len(shown) < self.max_examples:
      shown.append(occurrence)

  def finish(self, files: Sequence[str]) -> "ValidationReport":
    """Add the dataset problems: no record at all, or a task without any label 0 or 1."""
    if self.finished:
      return self
    self.finished = True
    for path in files:
      self.records_per_file.setdefault(path, 0)
    where = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    if self.records == 0 and not self.counts[CORRUPT_FILE]:
      self.add_problem(Occurrence(where, None, None, Problem(
          NO_RECORDS, "the files hold no record; convert the raw data first")))
    elif self.records > 0:
      for task in self.spec.tasks:
        if self.labelled[task] == 0:
          self.add_problem(Occurrence(where, None, None, Problem(
              TASK_ALL_MISSING, f"no checked record has a label 0 or 1 for task {task!r}; "
              "write the label as an int64 example feature of that name, or remove the task "
              "from the spec's tasks")))
    return self

  def kinds(self, severity: str) -> List[str]:
    return [kind for kind, (level, _) in PROBLEMS.items()
            if level == severity and self.counts[kind]]

  @property
  def has_errors(self) -> bool:
    return bool(self.kinds(ERROR))

  @property
  def has_dataset_errors(self) -> bool:
    """True for errors that skipping bad records cannot fix (no records, a task never labelled)."""
    return bool(self.counts[NO_RECORDS] or self.counts[TASK_ALL_MISSING])

  def first_error(self) -> Optional[Occurrence]:
    for kind in self.kinds(ERROR):
      return self.examples[kind][0]
    return None

  def to_dict(self) -> dict:
    return {
        "records": self.records,
        "bad_records": self.bad_records,
        "records_per_file": dict(self.records_per_file),
        "errors": {kind: self.counts[kind] for kind in self.kinds(ERROR)},
        "warnings": {kind: self.counts[kind] for kind in self.kinds(WARNING)},
        "examples": [
            {"kind": o.problem.kind, "severity": o.problem.severity, "file": o.path,
             "record": o.index, "byte_offset": o.offset, "detail": o.problem.detail}
            for kind in self.kinds(ERROR) + self.kinds(WARNING) for o in self.examples[kind]],
    }

  def format(self) -> str:
    """Return the report as text: a summary line, counts per problem and the first records."""
    lines = [f"Checked {self.records} records in {len(self.records_per_file)} files against "
             f"feature spec {self.spec.path or self.spec.name} (list_size {self.list_size}); "
             f"{self.bad_records} records have errors."]
    for title, severity in (("Errors", ERROR), ("Warnings", WARNING)):
      kinds = self.kinds(severity)
      if kinds:
        lines.append(f"{title} (records per problem):")
        lines.extend(f"  {kind:<26} {self.counts[kind]:>8}  {PROBLEMS[kind][1]}"
                     for kind in kinds)
    shown = [o for kind in self.kinds(ERROR) + self.kinds(WARNING) for o in self.examples[kind]]
    if shown:
      lines.append("First offending records:")
      lines.extend(f"  {o.problem.severity:<7} {o.problem.kind}: {o.location()}: "
                   f"{o.problem.detail}" for o in shown)
    if self.has_errors:
      lines.append("Result: errors found. Fix or drop the records named above; training can "
                   "skip bad records with --skip_bad_records.")
    else:
      lines.append("Result: no errors.")
    return "\n".join(lines)


def validate_files(files: Sequence[str], spec: FeatureSpec, list_size: Optional[int] = None,
                   max_records_per_file: Optional[int] = None,
                   max_examples: int = 3) -> ValidationReport:
  """Check the records of TFRecord `files` against `spec` and return the finished report.

  Args:
    files: TFRecord paths, read in this order.
    list_size: items per list after truncation; default the spec's list_size.
    max_records_per_file: check only the first records of each file; None checks all.
    max_examples: offending records kept in the report per problem kind.
  """
  report = ValidationReport(spec, list_size, max_examples)
  for path in files:
    report.records_per_file.setdefault(path, 0)
    for index, offset, record in read_records(path, max_records_per_file):
      if index is None:
        report.add_problem(Occurrence(path, None, offset, record))
        break
      report.add_record(path, index, offset, check_record(record, spec, report.list_size))
  return report.finish(list(files))


# ------------------------------------------------------------------------------------------------
# Training.


def check_before_training(train_files: str, eval_files: Optional[str], spec: FeatureSpec,
                          list_size: int, max_records_per_file: int,
                          skip_bad_records: bool) -> None:
  """Check the first records of each training and evaluation file (--validate_records).

  Raises:
    DataValidationError: with the report, when a checked record has an error and
      `skip_bad_records` is False, or when the files hold no record or never label a task,
      which skipping cannot repair.
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top

  if max_records_per_file <= 0:
    logging.info("start-up data check disabled (--validate_records=0)")
    return
  for flag, pattern in (("--train_files", train_files), ("--eval_files", eval_files)):
    if not pattern:
      continue
    files = data_lib.list_files(pattern, flag)
    report = validate_files(files, spec, list_size, max_records_per_file)
    summary = (f"{flag}: checked the first {max_records_per_file} records of each of "
               f"{len(files)} files (--validate_records)")
    if not report.has_errors:
      logging.info("%s: no errors, %d warnings", summary,
                   sum(report.counts[k] for k in report.kinds(WARNING)))
      continue
    if skip_bad_records and not report.has_dataset_errors:
      logging.warning("%s; --skip_bad_records drops the bad records:\n%s", summary,
                      report.format())
      continue
    raise DataValidationError(f"{summary} and found errors:\n{report.format()}", report)


def locate_data_error(error: Exception, files: Sequence[str], spec: FeatureSpec,
                      list_size: Optional[int] = None) -> Optional[TrainingDataError]:
  """Find the record behind a TensorFlow data error, which names no file.

  Reads `files` in order up to the first record (or corrupt part) that makes TensorFlow raise.

  Returns:
    A TrainingDataError naming the file, record and rule, or None when no file has such a
    record, so the error came from elsewhere.
  """
  for path in files:
    for index, offset, record in read_records(path):
      if index is None:
        problem = record
      else:
        problems = [p for p in check_record(record, spec, list_size).problems
                    if p.kind in RAISES_IN_TENSORFLOW]
        if not problems:
          continue
        problem = problems[0]
      return TrainingDataError(
          f"{Occurrence(path, index, offset, problem).location()}: {problem.kind}: "
          f"{problem.detail}. TensorFlow stopped with: {_first_line(error)}. Fix or drop the "
          "record (python -m pipelines.validate lists every bad record), or pass "
          "--skip_bad_records to skip bad records.")
  return None
