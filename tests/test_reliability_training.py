"""Training with bad data: fail fast with the report, skip and count, name corrupt files, stop
on a NaN loss without saving it, and mask missing labels."""

import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from elwc_fixtures import fixture_spec, make_elwc, random_records, write_records
from seqmd_tf import config as config_lib
from seqmd_tf import data as data_lib
from seqmd_tf import training
from seqmd_tf import validation
from seqmd_tf.losses import LISTWISE_LOSSES
from seqmd_tf.trainer import NonFiniteLossError, checkpointed_step
from test_reliability_validation import bad_records, required_spec, warning_records

BATCH_SIZE = 8
# A small model keeps each training run to a few seconds.
SMALL_MODEL = config_lib.ModelConfig(shared_units=(16,), gru_units=8, dropout=0.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Clean, mixed (valid + bad) and truncated training files, each in its own directory."""
  root = tmp_path_factory.mktemp("training_data")
  write_records(str(root / "clean" / "part-0.tfrecord"), random_records(48, seed=0))
  valid = random_records(10, seed=3)
  special = [r for r, _ in list(bad_records().values()) + list(warning_records().values())]
  write_records(str(root / "mixed" / "part-0.tfrecord"), valid + special)
  cut = str(root / "cut" / "part-0.tfrecord")
  write_records(cut, random_records(20, seed=4))
  with open(cut, "rb") as f:
    data = f.read()
  with open(cut, "wb") as f:
    f.write(data[:-25])
  return root


def _train(train_dir, model_dir, spec=None, epochs=1, steps_per_epoch=None, learning_rate=1e-3,
           model=SMALL_MODEL, **fault_tolerance):
  train_config = config_lib.TrainConfig(batch_size=BATCH_SIZE, epochs=epochs,
                                        steps_per_epoch=steps_per_epoch,
                                        learning_rate=learning_rate)
  paths = training.RunPaths(str(train_dir / "*.tfrecord"), None, str(model_dir))
  return training.train(spec or required_spec(), model, train_config, paths, verbose=0,
                        fault_tolerance=training.FaultTolerance(**fault_tolerance))


@pytest.fixture
def absl_warnings(caplog):
  """The messages that absl logs at WARNING and above during the test."""
  caplog.set_level(logging.WARNING, logger="absl")
  return caplog


# ---------------------------------------------------------------------------------------------
# Bad records.


def test_bad_records_stop_training_with_report(files, tmp_path):
  with pytest.raises(validation.DataValidationError) as raised:
    _train(files / "mixed", tmp_path / "model")
  message = str(raised.value)
  assert "--train_files: checked the first 200 records of each of 1 files" in message
  assert f"{files / 'mixed' / 'part-0.tfrecord'} record 10 " in message
  assert f"{len(bad_records())} records have errors" in message
  assert not os.path.exists(tmp_path / "model" / "backup")


def test_skip_bad_records_trains_on_the_rest(files, tmp_path, absl_warnings):
  trainer = _train(files / "mixed", tmp_path / "model", epochs=2, skip_bad_records=True)
  kept = 10 + len(warning_records())
  steps_per_epoch = -(-kept // BATCH_SIZE)
  assert int(trainer.optimizer.iterations) == 2 * steps_per_epoch
  assert (f"--skip_bad_records: {len(bad_records())} of the {kept + len(bad_records())} "
          "readable training records break") in absl_warnings.text
  assert "epoch 2: skipped" in absl_warnings.text
  assert all(np.all(np.isfinite(w)) for w in trainer.scorer.get_weights())


# ---------------------------------------------------------------------------------------------
# Truncated files.


def test_truncated_file_stops_start_up_check(files, tmp_path):
  with pytest.raises(validation.DataValidationError) as raised:
    _train(files / "cut", tmp_path / "model")
  assert re.search(rf"{re.escape(str(files / 'cut' / 'part-0.tfrecord'))} \(byte \d+\): "
                   r"TensorFlow cannot read past byte \d+ after 19 records", str(raised.value))


def test_truncated_file_named_when_counting(files, tmp_path):
  with pytest.raises(validation.TrainingDataError) as raised:
    _train(files / "cut", tmp_path / "model", validate_records=0)
  assert f"{files / 'cut' / 'part-0.tfrecord'} (byte " in str(raised.value)
  assert "corrupt_file" in str(raised.value)
  assert "truncated record at" in str(raised.value)


def test_truncated_file_named_during_training(files, tmp_path):
  with pytest.raises(validation.TrainingDataError) as raised:
    _train(files / "cut", tmp_path / "model", validate_records=0, steps_per_epoch=4)
  assert f"{files / 'cut' / 'part-0.tfrecord'} (byte " in str(raised.value)
  assert "--skip_bad_records" in str(raised.value)


def test_truncated_file_skipped(files, tmp_path, absl_warnings):
  trainer = _train(files / "cut", tmp_path / "model", skip_bad_records=True)
  assert re.search(r"part-0\.tfrecord is corrupt after its first 19 records", absl_warnings.text)
  assert int(trainer.optimizer.iterations) == -(-19 // BATCH_SIZE)


# ---------------------------------------------------------------------------------------------
# NaN loss.


def test_nan_loss_stops_and_keeps_last_checkpoint(files, tmp_path):
  backup_dir = str(tmp_path / "model" / "backup")
  # A learning rate of 1e12 sends the weights past float32 range within a few steps.
  with pytest.raises(NonFiniteLossError) as raised:
    _train(files / "clean", tmp_path / "model", spec=fixture_spec(), epochs=3,
           learning_rate=1e12, model=config_lib.ModelConfig(), checkpoint_every_steps=1)
  message = str(raised.value)
  match = re.search(r"training stopped at step (\d+) \(epoch \d+, batch \d+\).*"
                    r"the last finite loss was \S+ at step (\d+)", message)
  assert match, message
  failed_step, last_finite_step = int(match.group(1)), int(match.group(2))
  assert last_finite_step == failed_step - 1
  assert "The gradients of this step were not applied" in message
  assert checkpointed_step(backup_dir) == last_finite_step
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(backup_dir, "chief")))
  dtypes = reader.get_variable_to_dtype_map()
  for name in dtypes:
    if dtypes[name].is_floating:
      assert np.all(np.isfinite(reader.get_tensor(name))), name


# ---------------------------------------------------------------------------------------------
# Missing labels and lists without a positive, through RankingTrainer.


def _label_batch(with_unlabelled_list):
  lists = [
      # purchase has no positive in any list of the batch
      make_elwc("US", 3, ["wifi"], [10.0, 20.0, 30.0], [0.5, 0.1, -0.2], ["a", "b", "c"],
                [1, 0, 0], [0, 0, 0]),
      make_elwc("DE", 9, [], [15.0, 25.0], [0.3, 0.4], ["d", "e"], [0, 1], [None, -1]),
  ]
  if with_unlabelled_list:
    lists.append(make_elwc("BR", 1, [], [5.0, 6.0], [0.0, 0.1], ["f", "g"], [-1, None],
                           [None, -1]))
  return data_lib.parse_elwc(tf.constant(lists), fixture_spec())


@pytest.mark.parametrize("loss", LISTWISE_LOSSES)
def test_missing_labels_add_nothing(loss):
  tf.keras.utils.set_random_seed(1)
  trainer = training.build_trainer(fixture_spec(), SMALL_MODEL,
                                   config_lib.TrainConfig(loss=loss))
  without = trainer.test_on_batch(*_label_batch(False), return_dict=True)
  with_unlabelled = trainer.test_on_batch(*_label_batch(True), return_dict=True)
  assert without["loss/purchase"] == 0.0
  if loss != "list_mle":  # ListMLE breaks ties at random, so two calls differ
    assert with_unlabelled["loss/click"] == pytest.approx(without["loss/click"], abs=1e-6)
  assert with_unlabelled["pointwise/click"] == pytest.approx(without["pointwise/click"], abs=1e-6)

  logs = trainer.train_on_batch(*_label_batch(True), return_dict=True)
  assert np.isfinite(logs["loss"])
  assert logs["update_skipped"] == 0.0
  assert all(np.all(np.isfinite(w)) for w in trainer.scorer.get_weights())
