"""Multi-process training on 127.0.0.1: `python -m seqmd_tf.train --strategy=...` with TF_CONFIG.

multi_worker: two workers (MultiWorkerMirroredStrategy) each read one of two training files.
With a global batch of 8, each worker's step takes 4 lists from its own file, and the
single-process reference, which interleaves the two files one list at a time, takes the same 8
lists in each step. The run uses plain SGD without shuffling and without dropout, and every list
has 6 real items and a positive for every task. The averaged replica gradients then equal the
single batch's gradient, so the two models differ only by float32 rounding, because the
all-reduce sums in another order.

parameter_server: one chief trains with ParameterServerStrategy through Keras Model.fit, while a
worker and a parameter server run tf.distribute.Server in their own processes.

Every process runs in its own process group; the fixtures kill each group by PID when the test
ends, also on failure, and every wait has a timeout.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import pytest
import tensorflow as tf

from seqmd_tf import config as config_lib
from seqmd_tf import data as data_lib
from seqmd_tf import model as model_lib
from seqmd_tf import training
from seqmd_tf.trainer import checkpointed_step
from elwc_fixtures import REGIONS, SPEC_DICT, fixture_spec, make_elwc, write_records

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A training process imports TensorFlow (about 8 s), trains 3 steps and saves twice. On 2 CPU
# cores shared with other jobs, a multi_worker task took about 100 s. The timeout only guards
# against a hang.
PROCESS_TIMEOUT_SECONDS = 240
STOP_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.5

LISTS_PER_FILE = 24
LIST_SIZE = 6  # SPEC_DICT's list_size, so no list is padded or truncated
GLOBAL_BATCH_SIZE = 8
STEPS = 3
LEARNING_RATE = 0.1
# Scores are logits of magnitude below 1. Float32 rounding from the all-reduce's summation order
# moved them by about 1e-7 in this test; 1e-5 leaves room for other CPUs' kernels.
SCORE_TOLERANCE = 1e-5
# Small widths keep the traced graphs, and with them the test, fast.
TINY_MODEL_FLAGS = ["--shared_units=16,8", "--gru_units=8", "--dropout=0"]
TINY_MODEL_CONFIG = config_lib.ModelConfig(shared_units=(16, 8), gru_units=8, dropout=0.0)


def full_lists(num_lists: int, seed: int) -> List[bytes]:
  """Return serialized ELWC lists of LIST_SIZE items, each with a click and a purchase.

  Equal item counts and a positive per task give every replica batch the same loss
  denominators, so the mean of replica means is the global mean.
  """
  rng = np.random.default_rng(seed)
  records = []
  for index in range(num_lists):
    qualities = rng.normal(size=LIST_SIZE)
    clicks = (qualities > 0.5).astype(int)
    clicks[rng.integers(LIST_SIZE)] = 1
    purchases = np.zeros(LIST_SIZE, int)
    purchases[np.flatnonzero(clicks)[0]] = 1
    records.append(make_elwc(
        REGIONS[index % len(REGIONS)], int(rng.integers(0, 24)), ["wifi", "pool"][: index % 3],
        rng.uniform(10, 200, LIST_SIZE), qualities,
        [f"item{rng.integers(0, 100)}" for _ in range(LIST_SIZE)], clicks, purchases))
  return records


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """Two training files, one evaluation file and the fixture feature spec as a JSON file."""
  root = tmp_path_factory.mktemp("distributed_data")
  for shard in range(2):
    write_records(str(root / "train" / f"part-{shard}.tfrecord"),
                  full_lists(LISTS_PER_FILE, seed=shard))
  # One file for two workers: evaluation must not be sharded by file.
  write_records(str(root / "eval" / "part-0.tfrecord"), full_lists(LISTS_PER_FILE, seed=2))
  spec_path = root / "spec.json"
  spec_path.write_text(json.dumps(SPEC_DICT))
  return {"train_files": str(root / "train" / "*.tfrecord"),
          "eval_files": str(root / "eval" / "*.tfrecord"), "spec_path": str(spec_path)}


def free_ports(count: int) -> List[int]:
  """Return `count` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
    for sock in sockets:
      sock.bind(("127.0.0.1", 0))
    return [sock.getsockname()[1] for sock in sockets]


def tf_config(cluster: Dict[str, List[str]], task_type: str, task_index: int) -> str:
  return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_index}})


class Processes:
  """Subprocesses of one test, each the leader of its own process group, logged to files."""

  def __init__(self, log_dir):
    self._log_dir = str(log_dir)
    os.makedirs(self._log_dir, exist_ok=True)
    self._processes: Dict[str, subprocess.Popen] = {}

  def start(self, name: str, arguments: List[str], env: Dict[str, str]) -> None:
    with open(self.log_path(name), "w", encoding="utf-8") as log:
      self._processes[name] = subprocess.Popen(
          [sys.executable, *arguments], cwd=REPO_DIR, env={**os.environ, **env}, stdout=log,
          stderr=subprocess.STDOUT, start_new_session=True)

  def log_path(self, name: str) -> str:
    return os.path.join(self._log_dir, f"{name}.log")

  def log_tail(self, name: str, lines: int = 40) -> str:
    with open(self.log_path(name), encoding="utf-8", errors="replace") as log:
      return "".join(log.readlines()[-lines:])

  def wait(self, names: List[str]) -> Dict[str, Optional[int]]:
    """Wait for the processes `names` and return their exit codes.

    Stops waiting as soon as one fails, because its peers may then block forever in a
    collective op; those peers get None. Fails the test when the timeout passes first.
    """
    deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
      codes = {name: self._processes[name].poll() for name in names}
      if all(code is not None for code in codes.values()) or any(codes.values()):
        return codes
      time.sleep(POLL_SECONDS)
    running = [name for name in names if self.is_running(name)]
    pytest.fail(f"{running} did not finish within {PROCESS_TIMEOUT_SECONDS} s; the log of "
                f"{running[0]} ends with:\n{self.log_tail(running[0])}")

  def is_running(self, name: str) -> bool:
    return self._processes[name].poll() is None

  def stop_all(self) -> None:
    """Stop every process group: SIGTERM to a running leader, then SIGKILL to the group, which
    also ends any member left after its leader exited."""
    for process in self._processes.values():
      if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
          os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
          process.wait(timeout=STOP_TIMEOUT_SECONDS)
      with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=STOP_TIMEOUT_SECONDS)


def train_command(dataset, model_dir: str, export_dir: str, strategy: str) -> List[str]:
  return ["-m", "seqmd_tf.train", f"--strategy={strategy}",
          f"--feature_spec={dataset['spec_path']}", f"--train_files={dataset['train_files']}",
          f"--model_dir={model_dir}", f"--export_dir={export_dir}",
          f"--batch_size={GLOBAL_BATCH_SIZE}", f"--steps_per_epoch={STEPS}", "--epochs=1",
          *TINY_MODEL_FLAGS]


def training_records(dataset) -> tf.Tensor:
  """Return every training list as a [num_lists] tf.string tensor."""
  files = data_lib.list_files(dataset["train_files"])
  return next(iter(tf.data.TFRecordDataset(files).batch(10_000)))


def export_versions(export_dir: str) -> List[str]:
  return sorted(name for name in os.listdir(export_dir) if name.isdigit())


# ------------------------------------------------------------------------------------------------
# multi_worker: two workers against a single process.


@pytest.fixture(scope="module")
def multi_worker_run(dataset, tmp_path_factory):
  """Train with 2 multi_worker processes and, meanwhile, a single-process reference in this one.

  Returns the exit codes, directories and the reference trainer and its untrained twin.
  """
  root = tmp_path_factory.mktemp("multi_worker")
  model_dir, export_dir = str(root / "model"), str(root / "export")
  cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
  worker_tmp_dirs = [str(root / f"tmp_worker{index}") for index in range(2)]
  processes = Processes(root / "logs")
  command = train_command(dataset, model_dir, export_dir, "multi_worker") + [
      "--optimizer=sgd", f"--learning_rate={LEARNING_RATE}", "--noshuffle",
      f"--eval_files={dataset['eval_files']}"]
  try:
    for index in range(2):
      os.makedirs(worker_tmp_dirs[index])
      # TMPDIR makes a non-chief's temporary directories visible to the test.
      processes.start(f"worker{index}", command, {
          "TF_CONFIG": tf_config(cluster, "worker", index), "TMPDIR": worker_tmp_dirs[index],
          "TF_CPP_MIN_LOG_LEVEL": "2"})

    spec = fixture_spec()
    train_config = config_lib.TrainConfig(batch_size=GLOBAL_BATCH_SIZE, epochs=1,
                                          steps_per_epoch=STEPS, learning_rate=LEARNING_RATE)
    reference = training.train(
        spec, TINY_MODEL_CONFIG, train_config,
        training.RunPaths(dataset["train_files"], None, str(root / "reference")), verbose=0,
        shuffle=False, optimizer="sgd")
    # Same seed, same initial weights and normalization statistics, no training step.
    tf.keras.utils.set_random_seed(train_config.seed)
    untrained = training.build_trainer(spec, TINY_MODEL_CONFIG, train_config, "sgd")
    model_lib.feature_encoder(untrained.scorer).adapt(
        data_lib.make_dataset(dataset["train_files"], spec, GLOBAL_BATCH_SIZE))

    exit_codes = processes.wait(["worker0", "worker1"])
    logs = {name: processes.log_tail(name) for name in exit_codes}
  finally:
    processes.stop_all()
  return {"exit_codes": exit_codes, "logs": logs, "model_dir": model_dir,
          "export_dir": export_dir, "worker_tmp_dirs": worker_tmp_dirs, "spec": spec,
          "reference": reference, "untrained": untrained}


def test_multi_worker_chief_exits_zero(multi_worker_run):
  assert multi_worker_run["exit_codes"]["worker0"] == 0, multi_worker_run["logs"]["worker0"]


def test_multi_worker_other_worker_exits_zero(multi_worker_run):
  assert multi_worker_run["exit_codes"]["worker1"] == 0, multi_worker_run["logs"]["worker1"]


def test_multi_worker_chief_exports_one_version(multi_worker_run):
  versions = export_versions(multi_worker_run["export_dir"])
  assert len(versions) == 1
  assert os.path.isfile(os.path.join(multi_worker_run["export_dir"], versions[0],
                                     "saved_model.pb"))


def test_multi_worker_chief_writes_model_dir(multi_worker_run):
  model_dir = multi_worker_run["model_dir"]
  assert os.path.isfile(os.path.join(model_dir, "config.json"))
  assert os.path.isfile(os.path.join(model_dir, "scorer", "saved_model.pb"))
  assert checkpointed_step(os.path.join(model_dir, "backup")) == STEPS


def test_multi_worker_chief_evaluates_export(multi_worker_run):
  assert os.path.isfile(os.path.join(multi_worker_run["model_dir"], "eval.json"))


def test_multi_worker_other_worker_leaves_no_files(multi_worker_run):
  # Keras puts a non-chief's checkpoints in backup/workertemp_<task id> and deletes them.
  assert os.listdir(os.path.join(multi_worker_run["model_dir"], "backup")) == ["chief"]
  # The final scorer and the export of worker 1 went to deleted temporary directories.
  assert os.listdir(multi_worker_run["worker_tmp_dirs"][1]) == []


def test_multi_worker_scores_match_single_process(multi_worker_run, dataset):
  export_dir = multi_worker_run["export_dir"]
  serialized = training_records(dataset)
  serve = tf.saved_model.load(
      os.path.join(export_dir, export_versions(export_dir)[0])).signatures["serving_default"]
  distributed = serve(examples=serialized)
  features, _ = data_lib.parse_elwc(serialized, multi_worker_run["spec"])
  single = multi_worker_run["reference"].scorer(features, training=False)
  for name in distributed:
    np.testing.assert_allclose(distributed[name].numpy(), single[name].numpy(), rtol=0,
                               atol=SCORE_TOLERANCE, err_msg=name)


def test_multi_worker_training_moved_scores(multi_worker_run, dataset):
  # The match above means something only if 3 steps move the scores far beyond the tolerance.
  features, _ = data_lib.parse_elwc(training_records(dataset), multi_worker_run["spec"])
  trained = multi_worker_run["reference"].scorer(features, training=False)["score"].numpy()
  untrained = multi_worker_run["untrained"].scorer(features, training=False)["score"].numpy()
  assert np.max(np.abs(trained - untrained)) > 100 * SCORE_TOLERANCE


# ------------------------------------------------------------------------------------------------
# parameter_server: a chief, a worker and a parameter server.


@pytest.fixture(scope="module")
def parameter_server_run(dataset, tmp_path_factory):
  """Run the chief to completion with a worker and a ps server beside it."""
  root = tmp_path_factory.mktemp("parameter_server")
  model_dir, export_dir = str(root / "model"), str(root / "export")
  chief_port, worker_port, ps_port = free_ports(3)
  cluster = {"chief": [f"127.0.0.1:{chief_port}"], "worker": [f"127.0.0.1:{worker_port}"],
             "ps": [f"127.0.0.1:{ps_port}"]}
  processes = Processes(root / "logs")
  command = train_command(dataset, model_dir, export_dir, "parameter_server")
  try:
    # The cluster's servers start first; the chief connects to them when it creates its strategy.
    for task_type in ("ps", "worker", "chief"):
      processes.start(task_type, command, {"TF_CONFIG": tf_config(cluster, task_type, 0),
                                           "TF_CPP_MIN_LOG_LEVEL": "2"})
    chief_exit_code = processes.wait(["chief"])["chief"]
    servers_running = {name: processes.is_running(name) for name in ("ps", "worker")}
    logs = {name: processes.log_tail(name) for name in ("chief", "ps", "worker")}
  finally:
    processes.stop_all()
  return {"chief_exit_code": chief_exit_code, "servers_running": servers_running, "logs": logs,
          "model_dir": model_dir, "export_dir": export_dir}


def test_parameter_server_chief_exits_zero(parameter_server_run):
  assert parameter_server_run["chief_exit_code"] == 0, parameter_server_run["logs"]["chief"]


def test_parameter_server_servers_kept_serving(parameter_server_run):
  assert parameter_server_run["servers_running"]["ps"], parameter_server_run["logs"]["ps"]
  assert parameter_server_run["servers_running"]["worker"], parameter_server_run["logs"]["worker"]


def test_parameter_server_embeddings_on_ps(parameter_server_run):
  with open(os.path.join(parameter_server_run["model_dir"], "variable_devices.json"),
            encoding="utf-8") as f:
    devices = json.load(f)
  for name in ("feature_encoder/embedding_region/embeddings:0",
               "feature_encoder/embedding_item_id/embeddings:0"):
    assert name in devices, sorted(devices)
    assert devices[name] == ["/job:ps/replica:0/task:0/device:CPU:0"], name


def test_parameter_server_trained_steps(parameter_server_run):
  backup_dir = os.path.join(parameter_server_run["model_dir"], "backup")
  assert checkpointed_step(backup_dir) == STEPS


def test_parameter_server_export_scores(parameter_server_run, dataset):
  export_dir = parameter_server_run["export_dir"]
  versions = export_versions(export_dir)
  assert len(versions) == 1
  serve = tf.saved_model.load(os.path.join(export_dir, versions[0])).signatures["serving_default"]
  scores = serve(examples=training_records(dataset))["score"].numpy()
  assert scores.shape == (2 * LISTS_PER_FILE, LIST_SIZE)
  assert np.all(np.isfinite(scores))

