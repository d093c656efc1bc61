"""A training process killed with SIGKILL mid-epoch resumes and ends as an uninterrupted run.

Both runs are real `python -m seqmd_tf.train` processes on fixture TFRecords. The killed run is
stopped with kill -9 right after a checkpoint inside epoch 2 appears, then started again with
the same flags. Dropout is 0 and the loss is softmax, so no random op draws numbers that the
checkpoint does not restore (Keras 2.15 keeps the state of Dropout's random generator out of
checkpoints). Under these settings the resumed run matches the uninterrupted one to float32
round-off (atol 1e-6).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from elwc_fixtures import SPEC_DICT, random_records, write_records
from seqmd_tf.trainer import checkpointed_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SIZE = 8
TRAIN_LISTS = 400 + 240
STEPS_PER_EPOCH = TRAIN_LISTS // BATCH_SIZE  # 80
EPOCHS = 2
CHECKPOINT_EVERY_STEPS = 4
# Float32 round-off bound for weights, optimizer slots and metrics of two runs that apply the
# same updates in the same order.
TOLERANCE = 1e-6
# Checkpoint variables that are not part of the training state: Keras resets metric
# accumulators at every epoch start, and save_counter counts the checkpoints a process wrote.
_NOT_TRAINING_STATE = ("model/_ndcg/", "model/_trackers/", "save_counter/", "ckpt_saved_")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume")
  write_records(str(root / "train" / "part-0.tfrecord"), random_records(400, seed=0))
  write_records(str(root / "train" / "part-1.tfrecord"), random_records(240, seed=2))
  write_records(str(root / "eval" / "part-0.tfrecord"), random_records(64, seed=1))
  spec_path = root / "spec.json"
  spec_path.write_text(json.dumps(SPEC_DICT))
  return root


def _command(data, run_dir):
  return [
      sys.executable, "-m", "seqmd_tf.train", f"--feature_spec={data / 'spec.json'}",
      f"--train_files={data / 'train' / '*.tfrecord'}",
      f"--eval_files={data / 'eval' / '*.tfrecord'}",
      f"--model_dir={run_dir / 'model'}",
      f"--epochs={EPOCHS}", f"--batch_size={BATCH_SIZE}", "--dropout=0", "--seed=7",
      f"--checkpoint_every_steps={CHECKPOINT_EVERY_STEPS}"]


def _environment():
  return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")


def _saved_step(backup_dir):
  """Return the step of the newest complete checkpoint, or None (also while one is written)."""
  try:
    return checkpointed_step(backup_dir)
  except (tf.errors.OpError, ValueError):
    return None


def _kill_inside_epoch_two(process, backup_dir, timeout_s=300):
  """Kill -9 `process` as soon as a checkpoint inside epoch 2 exists; return that step."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    step = _saved_step(backup_dir)
    if step is not None and step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH:
      os.kill(process.pid, signal.SIGKILL)
      process.wait()
      return step
    if process.poll() is not None:
      raise AssertionError(f"training ended (exit {process.returncode}) before a checkpoint "
                           f"inside epoch 2 appeared; last checkpoint at step {step}")
    time.sleep(0.02)
  process.kill()
  raise AssertionError("no checkpoint inside epoch 2 within the time limit")


def _training_state(backup_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(backup_dir, "chief")))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith(_NOT_TRAINING_STATE)}


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
  uninterrupted_dir = tmp_path_factory.mktemp("uninterrupted")
  killed_dir = tmp_path_factory.mktemp("killed")
  # The uninterrupted run and the run to be killed share the 2 cores.
  uninterrupted = subprocess.Popen(_command(data, uninterrupted_dir), cwd=ROOT,
                                   env=_environment(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
  killed = subprocess.Popen(_command(data, killed_dir), cwd=ROOT, env=_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  killed_at = _kill_inside_epoch_two(killed, str(killed_dir / "model" / "backup"))
  resumed = subprocess.run(_command(data, killed_dir), cwd=ROOT, env=_environment(),
                           capture_output=True, text=True, timeout=600)
  _, uninterrupted_log = uninterrupted.communicate(timeout=600)
  assert uninterrupted.returncode == 0, uninterrupted_log[-3000:]
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  return {"uninterrupted": uninterrupted_dir, "killed": killed_dir, "killed_at": killed_at,
          "killed_returncode": killed.returncode, "resumed_log": resumed.stderr,
          "uninterrupted_log": uninterrupted_log}


def test_killed_mid_epoch(runs):
  assert runs["killed_returncode"] == -signal.SIGKILL
  assert runs["killed_at"] % STEPS_PER_EPOCH != 0


def test_resumed_run_logs_skipped_batches(runs):
  assert f"resuming from the checkpoint after step {runs['killed_at']}" in runs["resumed_log"]


def test_same_number_of_steps(runs):
  for name in ("uninterrupted", "killed"):
    state = _training_state(str(runs[name] / "model" / "backup"))
    assert int(state["train_counter/.ATTRIBUTES/VARIABLE_VALUE"]) == EPOCHS * STEPS_PER_EPOCH
    assert (int(state["model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) ==
            EPOCHS * STEPS_PER_EPOCH)


def test_same_weights_and_optimizer_state(runs):
  expected = _training_state(str(runs["uninterrupted"] / "model" / "backup"))
  actual = _training_state(str(runs["killed"] / "model" / "backup"))
  assert sorted(actual) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(actual[name], value, atol=TOLERANCE, err_msg=name)


def _last_epoch_eval_metrics(log):
  """Return {name: value} of the val_ metrics on the last epoch's progress line."""
  line = [l for l in log.splitlines() if f"epoch {EPOCHS}/{EPOCHS} done" in l][-1]
  metrics = re.findall(r"(val_[\w@/]+)=([-\d.]+)", line)
  return {name: float(value) for name, value in metrics}


def test_same_final_evaluation(runs):
  expected = _last_epoch_eval_metrics(runs["uninterrupted_log"])
  actual = _last_epoch_eval_metrics(runs["resumed_log"])
  assert "val_ndcg@10/purchase" in expected
  # The progress line rounds to 4 decimals; equal runs print equal values.
  assert actual == expected
