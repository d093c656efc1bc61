"""TF_CONFIG parsing, chief detection, cluster checks and chief-only writes of seqmd_tf.distribute."""

import json
import os

import pytest
import tensorflow as tf

from seqmd_tf import distribute
from seqmd_tf import train as train_cli
from seqmd_tf import training
from seqmd_tf.trainer import NonFiniteLossGuard

TWO_WORKERS = {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}
WITH_CHIEF = {"chief": ["127.0.0.1:2000"], "worker": ["127.0.0.1:2001"]}
PS_CLUSTER = {"chief": ["127.0.0.1:2000"], "worker": ["127.0.0.1:2001"], "ps": ["127.0.0.1:2002"]}


def task_of(cluster, task_type, index=0) -> distribute.ClusterTask:
  return distribute.parse_tf_config(
      json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))


def fake_distribution(name, task) -> distribute.Distribution:
  # The default strategy replaces the real one, because these checks read only the name and task.
  return distribute.Distribution(name, tf.distribute.get_strategy(), task)


def test_unset_tf_config_is_single_chief():
  task = distribute.parse_tf_config(None)
  assert task.task_type is None
  assert task.is_chief
  assert task.num_training_workers == 1


def test_worker_zero_is_chief_without_chief_job():
  assert task_of(TWO_WORKERS, "worker", 0).is_chief
  assert not task_of(TWO_WORKERS, "worker", 1).is_chief


def test_chief_job_is_chief():
  assert task_of(WITH_CHIEF, "chief").is_chief
  assert not task_of(WITH_CHIEF, "worker", 0).is_chief


def test_training_workers_count_chief():
  assert task_of(WITH_CHIEF, "worker").num_training_workers == 2
  assert task_of(PS_CLUSTER, "ps").num_training_workers == 2


def test_invalid_json_is_named():
  with pytest.raises(distribute.DistributeError, match="TF_CONFIG is not valid JSON"):
    distribute.parse_tf_config("{cluster: }")


def test_task_outside_cluster_is_named():
  with pytest.raises(distribute.DistributeError, match="task type 'ps' is not a job"):
    task_of(TWO_WORKERS, "ps")


def test_task_index_out_of_range_is_named():
  with pytest.raises(distribute.DistributeError, match="task index 2 is out of range"):
    task_of(TWO_WORKERS, "worker", 2)


def test_unsupported_job_is_named():
  with pytest.raises(distribute.DistributeError, match="job 'evaluator' is not supported"):
    task_of({**TWO_WORKERS, "evaluator": ["127.0.0.1:2003"]}, "worker")


def test_default_strategy_rejects_cluster():
  with pytest.raises(distribute.DistributeError, match="--strategy=default trains in one process"):
    distribute.check_cluster("default", task_of(TWO_WORKERS, "worker"))


def test_multi_worker_rejects_ps_job():
  with pytest.raises(distribute.DistributeError, match="remove the ps job"):
    distribute.check_cluster("multi_worker", task_of(PS_CLUSTER, "chief"))


def test_parameter_server_needs_ps_job():
  with pytest.raises(distribute.DistributeError, match="at least 1 ps task"):
    distribute.check_cluster("parameter_server", task_of(WITH_CHIEF, "chief"))


def test_parameter_server_accepts_full_cluster():
  distribute.check_cluster("parameter_server", task_of(PS_CLUSTER, "chief"))


def test_servers_are_worker_and_ps_tasks():
  assert distribute.runs_server("parameter_server", task_of(PS_CLUSTER, "worker"))
  assert distribute.runs_server("parameter_server", task_of(PS_CLUSTER, "ps"))
  assert not distribute.runs_server("parameter_server", task_of(PS_CLUSTER, "chief"))
  assert not distribute.runs_server("multi_worker", task_of(TWO_WORKERS, "worker", 1))


def test_multi_worker_shards_over_training_workers():
  distribution = fake_distribution("multi_worker", task_of(WITH_CHIEF, "worker"))
  assert distribution.num_input_pipelines == 2


def test_too_few_files_for_workers_is_named():
  distribution = fake_distribution("multi_worker", task_of(TWO_WORKERS, "worker"))
  with pytest.raises(distribute.DistributeError, match="--train_files matched 1 files"):
    distribution.check_training(batch_size=8, num_train_files=1)


def test_chief_writes_in_place(tmp_path):
  distribution = fake_distribution("multi_worker", task_of(TWO_WORKERS, "worker", 0))
  target = str(tmp_path / "export")
  with distribution.write_dir(target) as written:
    assert written == target


def test_non_chief_writes_to_deleted_temp_dir(tmp_path):
  distribution = fake_distribution("multi_worker", task_of(TWO_WORKERS, "worker", 1))
  target = str(tmp_path / "export")
  with distribution.write_dir(target) as written:
    os.makedirs(written)
    assert os.path.basename(written) == "export"
    assert written != target
  assert not os.path.exists(os.path.dirname(written))
  assert not os.path.exists(target)


def test_non_chief_temp_dir_deleted_on_error(tmp_path):
  distribution = fake_distribution("multi_worker", task_of(TWO_WORKERS, "worker", 1))
  with pytest.raises(RuntimeError):
    with distribution.write_dir(str(tmp_path / "export")) as written:
      raise RuntimeError("export failed")
  assert not os.path.exists(os.path.dirname(written))


def test_parameter_server_drops_batch_callbacks(tmp_path):
  distribution = fake_distribution("parameter_server", task_of(PS_CLUSTER, "chief"))
  epoch_level = tf.keras.callbacks.BackupAndRestore(str(tmp_path), save_freq="epoch")
  kept = distribution.supported_callbacks([NonFiniteLossGuard(str(tmp_path)), epoch_level])
  assert kept == [epoch_level]


def test_parameter_server_rejects_step_checkpoints(tmp_path):
  distribution = fake_distribution("parameter_server", task_of(PS_CLUSTER, "chief"))
  step_level = tf.keras.callbacks.BackupAndRestore(str(tmp_path), save_freq=5)
  with pytest.raises(distribute.DistributeError, match="drop --checkpoint_every_steps"):
    distribution.supported_callbacks([step_level])


def test_flag_values_match_library():
  assert set(train_cli.FLAGS["strategy"].parser.enum_values) == set(distribute.STRATEGIES)
  assert set(train_cli.FLAGS["optimizer"].parser.enum_values) == set(training.OPTIMIZERS)
