"""Data validation: the report of seqmd_tf.validation, the CLI, and the in-graph skip filter.

Every bad record is built here from a valid one. `bad_records()` and `warning_records()` are
also used by the training tests.
"""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import input_pb2

from elwc_fixtures import SPEC_DICT, make_elwc, random_records, write_records
from seqmd_tf import data as data_lib
from seqmd_tf import validation
from seqmd_tf.feature_spec import parse_feature_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def required_spec():
  """The fixture spec with `quality` marked required."""
  raw = copy.deepcopy(SPEC_DICT)
  for feature in raw["example_features"]:
    if feature["name"] == "quality":
      feature["required"] = True
  return parse_feature_spec(raw, path="fixture-required")


def _valid(price):
  """A valid 3-item list whose first price identifies it after parsing."""
  return make_elwc("US", 3, ["wifi"], [price, 20.0, 30.0], [0.1, 0.2, 0.3], ["a", "b", "c"],
                   [1, 0, 0], [0, 0, -1])


def _edited(edit, price):
  elwc = input_pb2.ExampleListWithContext.FromString(_valid(price))
  edit(elwc)
  return elwc.SerializeToString()


def _item(elwc, index, name):
  return elwc.examples[index].features.feature[name]


def _set_int(feature, values):
  feature.Clear()
  feature.int64_list.value.extend(values)


def _set_float(feature, values):
  feature.Clear()
  feature.float_list.value.extend(values)


def _only_unknown_features(elwc):
  for example in elwc.examples:
    example.Clear()
    example.features.feature["other"].float_list.value.append(1.0)
  elwc.context.Clear()


def bad_records():
  """Return {case: (serialized record, expected error kind)}, one record per case."""
  example = tf.train.Example(features=tf.train.Features(feature={
      "price": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
  return {
      "not_elwc": (example.SerializeToString(), validation.NOT_ELWC),
      "garbage_bytes": (b"\xff\xfe\x00 not a proto", validation.NOT_ELWC),
      "no_known_features": (_edited(_only_unknown_features, 901.0),
                            validation.NO_KNOWN_FEATURES),
      "empty_list": (_edited(lambda e: e.ClearField("examples"), 902.0), validation.EMPTY_LIST),
      "missing_required": (_edited(lambda e: e.examples[1].features.feature.pop("quality"), 903.0),
                           validation.MISSING_REQUIRED),
      "price_is_int64": (_edited(lambda e: _set_int(_item(e, 1, "price"), [5]), 904.0),
                         validation.WRONG_DTYPE),
      "label_is_float": (_edited(lambda e: _set_float(_item(e, 0, "click"), [1.0]), 905.0),
                         validation.WRONG_DTYPE),
      "context_is_int64": (_edited(lambda e: _set_int(e.context.features.feature["filters"], [3]),
                                   906.0), validation.WRONG_DTYPE),
      "two_prices": (_edited(lambda e: _set_float(_item(e, 2, "price"), [1.0, 2.0]), 907.0),
                     validation.WRONG_LENGTH),
      "empty_price_list": (_edited(lambda e: _set_float(_item(e, 2, "price"), []), 908.0),
                           validation.WRONG_LENGTH),
      "nan_quality": (_edited(lambda e: _set_float(_item(e, 1, "quality"), [float("nan")]), 909.0),
                      validation.NON_FINITE),
      "infinite_price": (_edited(lambda e: _set_float(_item(e, 1, "price"), [float("inf")]),
                                 910.0), validation.NON_FINITE),
      "label_two": (_edited(lambda e: _set_int(_item(e, 0, "click"), [2]), 911.0),
                    validation.INVALID_LABEL),
  }


def warning_records():
  """Return {case: (serialized record, expected warning kind)}; these records are kept."""
  size = 8  # longer than the spec's list_size 6
  return {
      "too_long": (make_elwc("US", 3, [], [801.0] + [1.0] * (size - 1), [0.0] * size,
                             [f"i{i}" for i in range(size)], [1] + [0] * (size - 1), [0] * size),
                   validation.LIST_TOO_LONG),
      "unseen_region": (make_elwc("ZZ", 3, [], [802.0], [0.0], ["a"], [1], [0]),
                        validation.REGION_OOV),
  }


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
  """A file of valid records with every bad and warning record in between.

  Returns (path, {record index: case}) for the bad and warning records.
  """
  valid = [_valid(float(price)) for price in range(1, 11)]
  special = list(bad_records().items()) + list(warning_records().items())
  records, index_of = [], {}
  for position, record in enumerate(valid):
    records.append(record)
    if position < len(special):
      case, (serialized, _) = special[position]
      index_of[len(records)] = case
      records.append(serialized)
  records.extend(serialized for _, (serialized, _) in special[len(valid):])
  path = str(tmp_path_factory.mktemp("mixed") / "part-0.tfrecord")
  write_records(path, records)
  return path, index_of


def _first_prices(dataset):
  return sorted(float(p) for features, _ in dataset for p in features["price"][:, 0, 0].numpy())


# ---------------------------------------------------------------------------------------------
# Report.


def test_report_counts_each_problem(mixed_file):
  report = validation.validate_files([mixed_file[0]], required_spec())
  expected = {}
  for _, kind in list(bad_records().values()) + list(warning_records().values()):
    expected[kind] = expected.get(kind, 0) + 1
  # The list with only unknown features also lacks the region and the required feature.
  expected[validation.REGION_OOV] += 1
  expected[validation.MISSING_REQUIRED] += 1
  assert dict(report.counts) == expected
  assert report.records == 10 + len(bad_records()) + len(warning_records())
  assert report.bad_records == len(bad_records())
  assert report.has_errors


def test_report_names_file_and_record(mixed_file):
  path, index_of = mixed_file
  report = validation.validate_files([path], required_spec(), max_examples=20)
  for occurrence in report.examples[validation.WRONG_DTYPE]:
    assert occurrence.path == path
    assert index_of[occurrence.index] in ("price_is_int64", "label_is_float", "context_is_int64")
  details = [o.problem.detail for o in report.examples[validation.WRONG_DTYPE]]
  assert "example feature of item 1, 'price' has int64 values, the spec says float" in details
  assert "label 'click' of item 0 has float values, labels are int64" in details
  text = report.format()
  assert f"{path} record " in text
  assert "label 'click' of item 0 is 2, allowed 0, 1 or -1 (missing)" in text


def test_byte_offset_points_at_record(mixed_file):
  path, index_of = mixed_file
  report = validation.validate_files([path], required_spec())
  occurrence = report.examples[validation.NOT_ELWC][0]
  with open(path, "rb") as f:
    f.seek(occurrence.offset)
    length = int.from_bytes(f.read(8), "little")
  assert length == len(bad_records()[index_of[occurrence.index]][0])


def test_warnings_alone_pass(tmp_path):
  path = write_records(str(tmp_path / "w.tfrecord"),
                       [r for r, _ in warning_records().values()] + random_records(5))
  report = validation.validate_files([path], required_spec())
  assert not report.has_errors
  assert report.counts[validation.LIST_TOO_LONG] >= 1
  assert report.counts[validation.REGION_OOV] == 1


def test_task_without_labels_is_error(tmp_path):
  records = [make_elwc("US", 3, [], [1.0, 2.0], [0.0, 1.0], ["a", "b"], [1, 0], [None, None])
             for _ in range(3)]
  path = write_records(str(tmp_path / "t.tfrecord"), records)
  report = validation.validate_files([path], required_spec())
  assert report.counts[validation.TASK_ALL_MISSING] == 1
  assert "task 'purchase'" in report.format()
  assert report.has_dataset_errors


def test_empty_file_is_error(tmp_path):
  path = write_records(str(tmp_path / "empty.tfrecord"), [])
  report = validation.validate_files([path], required_spec())
  assert report.counts[validation.NO_RECORDS] == 1
  assert report.has_errors


def test_truncated_file_names_offset(tmp_path):
  records = random_records(4)
  path = write_records(str(tmp_path / "cut.tfrecord"), records)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:-10])
  last_offset = sum(len(r) + validation.TFRECORD_OVERHEAD_BYTES for r in records[:3])
  report = validation.validate_files([path], required_spec())
  occurrence = report.examples[validation.CORRUPT_FILE][0]
  assert occurrence.offset == last_offset
  assert report.records == 3
  assert f"cannot read past byte {last_offset} after 3 records" in occurrence.problem.detail


# ---------------------------------------------------------------------------------------------
# The in-graph filter of --skip_bad_records drops exactly the records with errors.


@pytest.mark.parametrize("case", sorted(bad_records()))
def test_graph_check_rejects_bad_record(case):
  serialized, _ = bad_records()[case]
  assert validation.check_record(serialized, required_spec()).has_error
  try:
    valid = bool(data_lib.is_valid_record(tf.constant(serialized), required_spec()))
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
    valid = False
  assert not valid


@pytest.mark.parametrize("case", sorted(warning_records()))
def test_graph_check_keeps_warning_record(case):
  serialized, _ = warning_records()[case]
  assert not validation.check_record(serialized, required_spec()).has_error
  assert bool(data_lib.is_valid_record(tf.constant(serialized), required_spec()))


def test_skip_keeps_every_valid_record(mixed_file):
  path, _ = mixed_file
  counter = data_lib.BadRecordCounter("test")
  dataset = data_lib.make_dataset(path, required_spec(), batch_size=4, skip_bad_records=True,
                                  bad_records=counter)
  assert _first_prices(dataset) == list(range(1, 11)) + [801.0, 802.0]
  assert counter.skipped == len(bad_records())
  assert int(counter.read.numpy()) == 10 + len(bad_records()) + len(warning_records())


def test_skip_leaves_valid_features_unchanged(mixed_file, tmp_path):
  clean = write_records(str(tmp_path / "clean.tfrecord"),
                        [_valid(float(p)) for p in range(1, 11)])
  spec = required_spec()
  skipped = list(data_lib.make_dataset(mixed_file[0], spec, 64, skip_bad_records=True))[0][0]
  expected = list(data_lib.make_dataset(clean, spec, 64))[0][0]
  keep = np.isin(skipped["price"].numpy()[:, 0, 0], np.arange(1, 11))
  for name, value in expected.items():
    np.testing.assert_array_equal(skipped[name].numpy()[keep], value.numpy(), err_msg=name)


def test_without_skip_parse_fails(mixed_file):
  with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.DataLossError)):
    list(data_lib.make_dataset(mixed_file[0], required_spec(), batch_size=64))


# ---------------------------------------------------------------------------------------------
# Command line.


def _validate_cli(spec_path, files):
  return subprocess.run(
      [sys.executable, "-m", "pipelines.validate", f"--feature_spec={spec_path}",
       f"--files={files}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))


def test_cli_reports_errors_and_fails(mixed_file, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  spec_path = tmp_path / "spec.json"
  spec_path.write_text(json.dumps(required_spec().to_json_dict()))
  result = _validate_cli(spec_path, mixed_file[0])
  assert result.returncode == 1, result.stderr[-2000:]
  assert f"Checked {10 + len(bad_records()) + len(warning_records())} records in 1 files" in (
      result.stdout)
  assert f"{len(bad_records())} records have errors" in result.stdout
  for kind in (validation.NOT_ELWC, validation.WRONG_DTYPE, validation.INVALID_LABEL,
               validation.LIST_TOO_LONG):
    assert kind in result.stdout
  assert f"{mixed_file[0]} record " in result.stdout


def test_cli_passes_clean_files(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  spec_path = tmp_path / "spec.json"
  spec_path.write_text(json.dumps(SPEC_DICT))
  path = write_records(str(tmp_path / "data" / "a.tfrecord"), [_valid(float(p)) for p in range(5)])
  result = _validate_cli(spec_path, path)
  assert result.returncode == 0, result.stdout + result.stderr[-2000:]
  assert "Result: no errors." in result.stdout
