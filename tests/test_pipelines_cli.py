"""End-to-end runs of the converter CLIs as a user runs them (python -m pipelines.<name>)."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIVAGO_PATH = "/work/shared/data/trivago-recsys2019/trivago_2018-11-07_08_part1.parquet"
EXPEDIA_PATH = "/work/shared/data/expedia-icdm2013/expedia_vu_train_1000searches.csv"
ALIEXPRESS_PATH = "/work/shared/data/aliexpress/aliexpress_us_test_sample.csv"


def _run(module, *arguments):
  return subprocess.run(
    [sys.executable, "-m", f"pipelines.{module}", *arguments],
    cwd=REPO_DIR,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.skipif(not os.path.exists(TRIVAGO_PATH), reason=f"{TRIVAGO_PATH} is not present")
def test_trivago_cli_writes_shards_and_stats(tmp_path):
  actions = pd.read_parquet(TRIVAGO_PATH)
  sessions = actions["session_id"].drop_duplicates().iloc[:300]
  input_path = str(tmp_path / "slice.parquet")
  actions[actions["session_id"].isin(sessions)].to_parquet(input_path)
  output_dir = tmp_path / "out"

  result = _run(
    "trivago",
    "--input",
    input_path,
    "--output_dir",
    str(output_dir),
    "--num_shards",
    "3",
    "--log_every",
    "100",
  )
  assert result.returncode == 0, result.stderr
  assert "wrote 100 lists" in result.stderr
  assert sorted(os.listdir(output_dir)) == ["eval", "stats.json", "train"]
  assert sorted(os.listdir(output_dir / "train")) == [
    f"part-0000{shard}-of-00003.tfrecord" for shard in range(3)
  ]
  with open(output_dir / "stats.json") as stats_file:
    stats = json.load(stats_file)
  assert stats["flags"] == {"eval_fraction": 0.2, "num_shards": 3}
  assert stats["splits"]["eval"]["lists"] > 0
  assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


@pytest.mark.skipif(not os.path.exists(EXPEDIA_PATH), reason=f"{EXPEDIA_PATH} is not present")
def test_eval_fraction_out_of_range_rejected(tmp_path):
  result = _run(
    "expedia",
    "--input",
    EXPEDIA_PATH,
    "--output_dir",
    str(tmp_path / "out"),
    "--eval_fraction",
    "1.5",
  )
  assert result.returncode != 0
  assert "--eval_fraction=1.5" in result.stderr
  assert "must be in [0, 1]" in result.stderr
  assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not os.path.exists(ALIEXPRESS_PATH), reason=f"{ALIEXPRESS_PATH} is not present")
def test_aliexpress_cli_needs_a_region(tmp_path):
  input_path = tmp_path / "test.csv"
  shutil.copy(ALIEXPRESS_PATH, input_path)

  without_region = _run(
    "aliexpress", "--input", str(input_path), "--output_dir", str(tmp_path / "out")
  )
  assert without_region.returncode != 0
  assert "No region for" in without_region.stderr + without_region.stdout
  assert not (tmp_path / "out").exists()

  with_region = _run(
    "aliexpress",
    "--input",
    str(input_path),
    "--output_dir",
    str(tmp_path / "out"),
    "--region",
    "fr",
  )
  assert with_region.returncode == 0, with_region.stderr
  with open(tmp_path / "out" / "stats.json") as stats_file:
    assert json.load(stats_file)["region"] == "FR"


def test_synthetic_cli_rejects_existing_output(tmp_path):
  output_dir = tmp_path / "out"
  output_dir.mkdir()
  (output_dir / "keep.txt").write_text("earlier run")
  arguments = [
    "--output_dir",
    str(output_dir),
    "--num_lists",
    "30",
    "--num_regions",
    "3",
    "--list_size",
    "4",
  ]

  rejected = _run("synthetic", *arguments)
  assert rejected.returncode != 0
  assert "exists and is not empty; pass --overwrite" in rejected.stderr
  assert (output_dir / "keep.txt").exists()

  replaced = _run("synthetic", *arguments, "--overwrite", "--setting", "shared")
  assert replaced.returncode == 0, replaced.stderr
  assert sorted(os.listdir(output_dir)) == ["eval", "stats.json", "train"]
  with open(output_dir / "stats.json") as stats_file:
    stats = json.load(stats_file)
  assert stats["flags"]["setting"] == "shared"
  assert stats["splits"]["train"]["lists"] + stats["splits"]["eval"]["lists"] == 30
