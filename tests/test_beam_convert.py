"""pipelines.beam_convert against the single-process converters, on real files.

Each Beam run must write, per split, the same multiset of serialized ELWC records as the
single-process converter, and the same stats.json apart from `beam_runner`. The runs on the
trivago file, the AliExpress sample and a small synthetic set use the CLI with the DirectRunner
in multi-process mode (two worker processes).
"""

import collections
import json
import os
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import aliexpress
from pipelines import beam_convert
from pipelines import elwc
from pipelines import synthetic
from pipelines import trivago

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIVAGO_PATH = "/work/shared/data/trivago-recsys2019/trivago_2018-11-07_08_part1.parquet"
ALIEXPRESS_PATH = "/work/shared/data/aliexpress/aliexpress_us_train_sample.csv"
DIRECT_RUNNER_ARGS = (
  "--runner=DirectRunner",
  "--direct_num_workers=2",
  "--direct_running_mode=multi_processing",
)
# A small synthetic set with a partial last chunk, so chunking and the split boundary both matter.
SYNTHETIC_FLAGS = {
  "num_lists": synthetic.CHUNK_LISTS + 904,
  "num_regions": 6,
  "list_size": 12,
  "setting": "differ",
  "seed": 3,
  "world_seed": 1,
}

needs_trivago = pytest.mark.skipif(
  not os.path.exists(TRIVAGO_PATH), reason=f"{TRIVAGO_PATH} is not present"
)
needs_aliexpress = pytest.mark.skipif(
  not os.path.exists(ALIEXPRESS_PATH), reason=f"{ALIEXPRESS_PATH} is not present"
)


def _run_beam_cli(args) -> subprocess.CompletedProcess:
  """Run `python -m pipelines.beam_convert` from the repository root; return the result."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
    [sys.executable, "-m", "pipelines.beam_convert", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _convert_with_beam(args) -> None:
  result = _run_beam_cli([*args, *DIRECT_RUNNER_ARGS])
  assert result.returncode == 0, result.stderr[-3000:]


def _records(read_split, output_dir: str, split: str) -> collections.Counter:
  return collections.Counter(read_split(output_dir, split))


def _difference(single: collections.Counter, beam: collections.Counter) -> str:
  only_single = sum((single - beam).values())
  only_beam = sum((beam - single).values())
  return (
    f"{sum(single.values())} single-process and {sum(beam.values())} Beam records; "
    f"{only_single} only in single-process, {only_beam} only in Beam"
  )


def _load_stats(output_dir: str) -> dict:
  with open(os.path.join(output_dir, elwc.STATS_FILENAME)) as stats_file:
    return json.load(stats_file)


def _shard_names(output_dir: str, split: str) -> list:
  return sorted(os.listdir(os.path.join(output_dir, split)))


@pytest.fixture(scope="module")
def trivago_outputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("beam_trivago")
  trivago.convert(TRIVAGO_PATH, str(root / "single"), eval_fraction=0.2, num_shards=2)
  _convert_with_beam(
    ["--source=trivago", f"--input={TRIVAGO_PATH}", f"--output_dir={root / 'beam'}"]
  )
  return str(root / "single"), str(root / "beam")


@pytest.fixture(scope="module")
def aliexpress_outputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("beam_aliexpress")
  aliexpress.convert(ALIEXPRESS_PATH, str(root / "single"), eval_fraction=0.25, num_shards=3)
  _convert_with_beam(
    [
      "--source=aliexpress",
      f"--input={ALIEXPRESS_PATH}",
      f"--output_dir={root / 'beam'}",
      "--eval_fraction=0.25",
      "--num_shards=3",
    ]
  )
  return str(root / "single"), str(root / "beam")


@pytest.fixture(scope="module")
def synthetic_outputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("beam_synthetic")
  synthetic.generate(str(root / "single"), eval_fraction=0.3, num_shards=2, **SYNTHETIC_FLAGS)
  generator_args = [f"--{name}={value}" for name, value in SYNTHETIC_FLAGS.items()]
  _convert_with_beam(
    ["--source=synthetic", f"--output_dir={root / 'beam'}", "--eval_fraction=0.3", *generator_args]
  )
  return str(root / "single"), str(root / "beam")


@pytest.fixture(scope="module")
def synthetic_all_eval_outputs(tmp_path_factory):
  """Every list in eval, so the train split has no list and only empty shards.

  This run calls beam_convert.run in the test process with the in-memory DirectRunner, which
  starts faster than the CLI with worker processes.
  """
  root = tmp_path_factory.mktemp("beam_synthetic_all_eval")
  generator = dict(SYNTHETIC_FLAGS, num_lists=300)
  synthetic.generate(str(root / "single"), eval_fraction=1.0, num_shards=3, **generator)
  beam_convert.run(
    "synthetic",
    str(root / "beam"),
    PipelineOptions(["--runner=DirectRunner"]),
    eval_fraction=1.0,
    num_shards=3,
    generator=generator,
  )
  return str(root / "single"), str(root / "beam")


# ---------------------------------------------------------------------------------------------
# Beam output equals single-process output.


OUTPUTS = [
  pytest.param("trivago_outputs", marks=needs_trivago, id="trivago"),
  pytest.param("aliexpress_outputs", marks=needs_aliexpress, id="aliexpress"),
  pytest.param("synthetic_outputs", id="synthetic"),
  pytest.param("synthetic_all_eval_outputs", id="synthetic_all_eval"),
]


@pytest.mark.parametrize("outputs_fixture", OUTPUTS)
def test_train_split_same_lists(outputs_fixture, request, read_split):
  single_dir, beam_dir = request.getfixturevalue(outputs_fixture)
  single = _records(read_split, single_dir, elwc.TRAIN)
  beam = _records(read_split, beam_dir, elwc.TRAIN)
  assert beam == single, _difference(single, beam)


@pytest.mark.parametrize("outputs_fixture", OUTPUTS)
def test_eval_split_same_lists(outputs_fixture, request, read_split):
  single_dir, beam_dir = request.getfixturevalue(outputs_fixture)
  single = _records(read_split, single_dir, elwc.EVAL)
  beam = _records(read_split, beam_dir, elwc.EVAL)
  assert beam == single, _difference(single, beam)


@pytest.mark.parametrize("outputs_fixture", OUTPUTS)
def test_stats_equal_except_runner(outputs_fixture, request):
  single_dir, beam_dir = request.getfixturevalue(outputs_fixture)
  single_stats = _load_stats(single_dir)
  beam_stats = _load_stats(beam_dir)
  assert beam_stats.pop(beam_convert.RUNNER_KEY) == "DirectRunner"
  assert beam_stats == single_stats
  assert list(beam_stats) == list(single_stats)


@pytest.mark.parametrize("outputs_fixture", OUTPUTS)
def test_same_shard_files(outputs_fixture, request):
  single_dir, beam_dir = request.getfixturevalue(outputs_fixture)
  for split in elwc.SPLITS:
    assert _shard_names(beam_dir, split) == _shard_names(single_dir, split), split


def test_empty_split_has_empty_shards(synthetic_all_eval_outputs):
  _, beam_dir = synthetic_all_eval_outputs
  train_dir = os.path.join(beam_dir, elwc.TRAIN)
  sizes = [os.path.getsize(os.path.join(train_dir, name)) for name in os.listdir(train_dir)]
  assert sizes == [0, 0, 0]


def test_no_staging_directory_left(synthetic_outputs):
  _, beam_dir = synthetic_outputs
  parent = os.path.dirname(beam_dir)
  assert sorted(os.listdir(parent)) == ["beam", "single"]


# ---------------------------------------------------------------------------------------------
# Split boundary and statistics merging, without a runner.


@pytest.mark.parametrize("eval_fraction", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("num_keys", [0, 1, 2, 7, 40])
def test_eval_boundary_matches_assign_splits(num_keys, eval_fraction):
  keys = [(1000 - 7 * index, f"s{index}") for index in range(num_keys)]
  expected = elwc.assign_splits(sorted(keys), eval_fraction)
  boundary = beam_convert.eval_boundary(reversed(keys), eval_fraction)
  assert {key: beam_convert.split_of(key, boundary) for key in keys} == expected


def test_merged_split_stats_equal_one_pass():
  tasks = ("click", "purchase")
  lists = [
    ("US", {"click": [1, 0, 1], "purchase": [0, 0, 1]}),
    ("DE", {"click": [0, 0], "purchase": [1, 0]}),
    ("US", {"click": [0, 1, 1, 1], "purchase": [0, 0, 0, 0]}),
  ]
  one_pass = elwc.SplitStats(tasks)
  for region, labels in lists:
    one_pass.add(region, labels)
  first, second = elwc.SplitStats(tasks), elwc.SplitStats(tasks)
  first.add(*lists[0])
  for region, labels in lists[1:]:
    second.add(region, labels)
  beam_convert.merge_split_stats(first, second)
  assert first.to_dict() == one_pass.to_dict()


def test_merge_counters_keeps_zero_counts():
  merged = beam_convert.merge_counters(
    [collections.Counter(sessions_eval=0, rows_read=3), {"rows_read": 2}]
  )
  assert merged == {"sessions_eval": 0, "rows_read": 5}
  assert "sessions_eval" in merged


def test_filesystem_commit_moves_every_file(tmp_path):
  staging = tmp_path / ".out.tmp-1"
  (staging / "train").mkdir(parents=True)
  (staging / "train" / "part-00000-of-00001.tfrecord").write_bytes(b"abc")
  (staging / "stats.json").write_text("{}")
  output = tmp_path / "out"
  output.mkdir()
  (output / "old.txt").write_text("old")
  beam_convert.commit_with_filesystems(str(staging), str(output))
  assert sorted(os.listdir(output)) == ["stats.json", "train"]
  assert (output / "train" / "part-00000-of-00001.tfrecord").read_bytes() == b"abc"
  assert not staging.exists()


# ---------------------------------------------------------------------------------------------
# Errors.


def test_existing_output_rejected(tmp_path):
  output = tmp_path / "out"
  output.mkdir()
  (output / "stats.json").write_text("{}")
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    beam_convert.run(
      "synthetic",
      str(output),
      PipelineOptions([]),
      generator=dict(SYNTHETIC_FLAGS, num_lists=10),
    )
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_missing_input_is_flag_error(tmp_path):
  result = _run_beam_cli(["--source=trivago", f"--output_dir={tmp_path / 'out'}"])
  assert result.returncode != 0
  assert "--input is required unless --source=synthetic" in result.stderr


def test_missing_parquet_column_names_file(tmp_path):
  import pandas as pd

  path = str(tmp_path / "log.parquet")
  pd.DataFrame({"session_id": ["a"], "timestamp": [1]}).to_parquet(path)
  with pytest.raises(ValueError, match="missing columns") as error:
    beam_convert.run("trivago", str(tmp_path / "out"), PipelineOptions([]), input_path=path)
  assert path in str(error.value)
  assert not os.path.exists(tmp_path / "out")
