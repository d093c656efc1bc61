"""Converters on bad input: each case is handled by a counted rule or rejected with the row, and
an interrupted conversion leaves no shard that a `train/*.tfrecord` glob can pick up."""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from tensorflow_serving.apis import input_pb2

from pipelines import aliexpress
from pipelines import expedia
from pipelines import trivago
from seqmd_tf import data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPEDIA_PATH = "/work/shared/data/expedia-icdm2013/expedia_vu_train_1000searches.csv"


def _read_lists(output_dir, split="train"):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  paths = sorted(glob.glob(os.path.join(output_dir, split, "*.tfrecord")))
  return [input_pb2.ExampleListWithContext.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(paths)]


def _values(example, name):
  feature = example.features.feature[name]
  return list(getattr(feature, feature.WhichOneof("kind")).value)


# ---------------------------------------------------------------------------------------------
# trivago


def _trivago_rows(clickouts):
  """Build a trivago log: one session per (impressions, prices, reference) clickout."""
  rows = []
  for index, (impressions, prices, reference) in enumerate(clickouts):
    rows.append(dict(session_id=f"s{index}", timestamp=1541030400 + 60 * index, step=1,
                     action_type="clickout item", reference=reference, platform="US",
                     city="Berlin, Germany", device="desktop", current_filters=None,
                     impressions=impressions, prices=prices))
  return pd.DataFrame(rows, columns=list(trivago.COLUMNS))


def _convert_trivago(tmp_path, rows):
  path = str(tmp_path / "log.parquet")
  rows.to_parquet(path)
  return trivago.convert(path, str(tmp_path / "out"), eval_fraction=0.0, num_shards=1)


def test_trivago_missing_column_named(tmp_path):
  path = str(tmp_path / "log.parquet")
  _trivago_rows([("1|2", "10|20", "1")]).drop(columns=["prices"]).to_parquet(path)
  with pytest.raises(ValueError, match=r"log\.parquet: missing columns \['prices'\]"):
    trivago.convert(path, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_trivago_empty_file_rejected(tmp_path):
  with pytest.raises(ValueError, match=r"log\.parquet: the file has no rows"):
    _convert_trivago(tmp_path, _trivago_rows([]))


def test_trivago_price_count_mismatch_skipped(tmp_path):
  stats = _convert_trivago(tmp_path, _trivago_rows([("1|2|3", "10|20", "1"),
                                                    ("4|5", "40|50", "5")]))
  assert stats["counters"]["skipped_price_count_mismatch"] == 1
  assert stats["splits"]["train"]["lists"] == 1
  lists = _read_lists(tmp_path / "out")
  assert [_values(e, "item_id")[0] for e in lists[0].examples] == [b"4", b"5"]


def test_trivago_duplicate_impression_keeps_first(tmp_path):
  stats = _convert_trivago(tmp_path, _trivago_rows([("7|8|7|9", "10|20|30|40", "7")]))
  assert stats["counters"]["duplicate_impressions_dropped"] == 1
  assert stats["counters"]["lists_with_duplicate_impressions"] == 1
  (example_list,) = _read_lists(tmp_path / "out")
  items = example_list.examples
  assert [_values(e, "item_id")[0] for e in items] == [b"7", b"8", b"9"]
  assert [_values(e, "price")[0] for e in items] == [10.0, 20.0, 40.0]
  assert [_values(e, "clickout")[0] for e in items] == [1, 0, 0]


def test_trivago_non_integer_timestamp_named(tmp_path):
  rows = _trivago_rows([("1|2", "10|20", "1")] * 3)
  rows["timestamp"] = rows["timestamp"].astype(str)
  rows.loc[2, "timestamp"] = "yesterday"
  with pytest.raises(ValueError, match=r"log\.parquet: row 3 has timestamp='yesterday'; "
                     r"timestamp must be an integer"):
    _convert_trivago(tmp_path, rows)


def test_trivago_invalid_utf8_named(tmp_path):
  rows = _trivago_rows([("1|2", "10|20", "1")] * 2)
  rows["platform"] = [b"US", b"\xffUS"]
  with pytest.raises(ValueError, match=r"log\.parquet: row 2, column 'platform' is not valid "
                     r"UTF-8 \(invalid start byte at byte 0"):
    _convert_trivago(tmp_path, rows)


# ---------------------------------------------------------------------------------------------
# AliExpress


def _aliexpress_frame(num_searches=3):
  rng = np.random.default_rng(0)
  rows = []
  for search in range(num_searches):
    for item in range(2):
      row = {"search_id": 100 + search}
      row.update({c: int(rng.integers(0, 50)) for c in aliexpress.CATEGORICAL_COLUMNS})
      row.update({c: round(float(rng.normal()), 4) for c in aliexpress.NUMERICAL_COLUMNS})
      row.update(click=int(item == 0), conversion=0)
      rows.append(row)
  return pd.DataFrame(rows, columns=list(aliexpress.REQUIRED_COLUMNS))


def _aliexpress_csv(tmp_path, text):
  path = tmp_path / "aliexpress_us_train.csv"
  path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
  return str(path)


def test_aliexpress_missing_column_named(tmp_path):
  path = _aliexpress_csv(tmp_path, _aliexpress_frame().drop(columns=["click"]).to_csv(index=False))
  with pytest.raises(ValueError, match=r"aliexpress_us_train\.csv: missing columns \['click'\]"):
    aliexpress.convert(path, str(tmp_path / "out"))


def test_aliexpress_text_in_numeric_column_named(tmp_path):
  frame = _aliexpress_frame()
  frame["numerical_5"] = frame["numerical_5"].astype(object)
  frame.loc[3, "numerical_5"] = "low"
  path = _aliexpress_csv(tmp_path, frame.to_csv(index=False))
  with pytest.raises(ValueError, match=r"data row 4 has numerical_5='low'; numerical_5 must be "
                     r"a number"):
    aliexpress.convert(path, str(tmp_path / "out"))


def test_aliexpress_fraction_in_id_column_named(tmp_path):
  frame = _aliexpress_frame()
  frame["categorical_2"] = frame["categorical_2"].astype(float)
  frame.loc[1, "categorical_2"] = 3.5
  path = _aliexpress_csv(tmp_path, frame.to_csv(index=False))
  with pytest.raises(ValueError, match=r"data row 2 has categorical_2=3\.5; categorical_2 must "
                     r"be an integer"):
    aliexpress.convert(path, str(tmp_path / "out"))


@pytest.mark.parametrize("text, message", [
    ("", r"aliexpress_us_train\.csv: the file is empty"),
    (",".join(aliexpress.REQUIRED_COLUMNS) + "\n", r"has a header but no data row"),
])
def test_aliexpress_empty_input_rejected(tmp_path, text, message):
  path = _aliexpress_csv(tmp_path, text)
  with pytest.raises(ValueError, match=message):
    aliexpress.convert(path, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_aliexpress_invalid_utf8_named(tmp_path):
  lines = _aliexpress_frame().to_csv(index=False).encode("utf-8").split(b"\n")
  lines[3] = lines[3].replace(b",", b",\xff", 1)
  path = _aliexpress_csv(tmp_path, b"\n".join(lines))
  with pytest.raises(ValueError, match=r"line 4 \(data row 3\) is not valid UTF-8: invalid "
                     r"start byte at byte \d+ of the file"):
    aliexpress.convert(path, str(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------
# Expedia


@pytest.fixture(scope="module")
def expedia_rows():
  if not os.path.exists(EXPEDIA_PATH):
    pytest.skip(f"{EXPEDIA_PATH} is not present")
  rows = pd.read_csv(EXPEDIA_PATH, nrows=200)
  first_two = rows["srch_id"].drop_duplicates().iloc[:2]
  return rows[rows["srch_id"].isin(first_two)].reset_index(drop=True)


def test_expedia_duplicate_property_keeps_first(expedia_rows, tmp_path):
  rows = expedia_rows.copy()
  first_search = rows["srch_id"] == rows["srch_id"].iloc[0]
  duplicate = rows[first_search].sort_values("position").iloc[[0]].copy()
  duplicate["position"] = rows["position"].max() + 1
  duplicate["price_usd"] = 12345.0
  rows = pd.concat([rows, duplicate], ignore_index=True)
  path = tmp_path / "expedia.csv"
  rows.to_csv(path, index=False)
  stats = expedia.convert(str(path), str(tmp_path / "out"), eval_fraction=0.0, num_shards=1)
  assert stats["counters"]["duplicate_items_dropped"] == 1
  assert stats["counters"]["lists_with_duplicate_items"] == 1
  assert stats["splits"]["train"]["items"] == len(expedia_rows)
  prices = [_values(e, "price_usd")[0] for l in _read_lists(tmp_path / "out") for e in l.examples]
  assert 12345.0 not in prices


def test_expedia_text_in_numeric_column_named(expedia_rows, tmp_path):
  rows = expedia_rows.copy()
  rows["price_usd"] = rows["price_usd"].astype(object)
  rows.loc[4, "price_usd"] = "cheap"
  path = tmp_path / "expedia.csv"
  rows.to_csv(path, index=False)
  with pytest.raises(ValueError, match=r"data row 5 has price_usd='cheap'; price_usd must be a "
                     r"number"):
    expedia.convert(str(path), str(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------
# Interrupted conversion.


def _start_synthetic(output_dir):
  return subprocess.Popen(
      [sys.executable, "-m", "pipelines.synthetic", f"--output_dir={output_dir}",
       "--num_lists=2000000", "--num_shards=2", "--list_size=20"],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))


def _wait_for_written_shard(parent, process, timeout_s=120):
  """Return once a shard in a temporary output directory under `parent` holds bytes."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    shards = glob.glob(os.path.join(parent, ".out.tmp-*", "*", "*.tfrecord"))
    if any(os.path.getsize(shard) > 0 for shard in shards):
      return
    assert process.poll() is None, "the converter ended before writing a shard"
    time.sleep(0.05)
  process.kill()
  raise AssertionError("no shard was written within the time limit")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_conversion_leaves_no_shards(tmp_path, stop_signal):
  output_dir = tmp_path / "out"
  process = _start_synthetic(output_dir)
  _wait_for_written_shard(str(tmp_path), process)
  process.send_signal(stop_signal)
  process.wait(timeout=120)

  assert process.returncode != 0
  assert not output_dir.exists()
  assert glob.glob(str(output_dir / "train" / "*.tfrecord")) == []
  # The glob that training expands (Python's glob) skips hidden directories, so a temporary
  # directory that SIGKILL leaves behind is not read either.
  with pytest.raises(data_lib.InputFilesError):
    data_lib.list_files(str(tmp_path / "*" / "train" / "*.tfrecord"))
  leftovers = glob.glob(str(tmp_path / ".out.tmp-*"))
  if stop_signal == signal.SIGINT:
    assert leftovers == []  # KeyboardInterrupt runs DatasetWriter.abort
  else:
    assert len(leftovers) == 1
