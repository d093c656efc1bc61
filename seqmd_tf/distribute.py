"""tf.distribute strategies for `python -m seqmd_tf.train --strategy=...`, configured by TF_CONFIG.

Strategies:
  default: one process on one device (tf.distribute's default strategy).
  mirrored: one process, synchronous data parallelism over its local GPUs (MirroredStrategy).
  multi_worker: synchronous data parallelism over the "chief" and "worker" tasks of TF_CONFIG
    (MultiWorkerMirroredStrategy). Every task runs the same command, reads its own share of the
    training files and all-reduces the gradients every step.
  parameter_server: asynchronous training (ParameterServerStrategy). The "ps" tasks hold the
    variables, the "worker" tasks run training steps, and the "chief" task runs the training
    program and dispatches the steps. Worker and ps tasks start a tf.distribute.Server and wait.

TF_CONFIG is the JSON that tf.distribute reads from the environment, for example
  {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}
Cluster managers such as Kubeflow's TFJob set it for every replica.

The chief writes config.json, checkpoints, logs, the final scorer and the export. Other
multi_worker tasks run the same saves into temporary directories that are then deleted, because
saving reads SyncOnRead variables (Keras metric states, for example), and reading one runs an
all-reduce in which every worker must take part.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
TF_CONFIG_VARIABLE = "TF_CONFIG"
CHIEF = "chief"
WORKER = "worker"
PS = "ps"
JOBS = (CHIEF, WORKER, PS)

# Each shard of a variable split over the parameter servers (at most one shard per server)
# contains at least this many bytes, so a variable below twice this size stays whole on one
# server. Small layers stay unsplit, where an RPC per shard would cost more than it gains.
MIN_SHARD_BYTES = 256 << 10

_EXAMPLE_TF_CONFIG = ('{"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}')


class DistributeError(ValueError):
  """TF_CONFIG or a flag does not fit the requested strategy; the message names which."""


@dataclasses.dataclass(frozen=True)
class ClusterTask:
  """This process's task in the cluster described by TF_CONFIG.

  Attributes:
    cluster: job name ("chief", "worker" or "ps") -> "host:port" address of each task.
      Empty when TF_CONFIG is unset.
    task_type: this task's job name; None when TF_CONFIG is unset (a single process).
    task_id: this task's index within its job.
    rpc_layer: the protocol of tf.distribute.Server.
  """

  cluster: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
  task_type: Optional[str] = None
  task_id: int = 0
  rpc_layer: str = "grpc"

  @property
  def num_tasks(self) -> int:
    return sum(len(addresses) for addresses in self.cluster.values())

  @property
  def num_training_workers(self) -> int:
    """Tasks that run training steps: the chief and the workers (at least 1)."""
    return max(1, len(self.cluster.get(CHIEF, ())) + len(self.cluster.get(WORKER, ())))

  @property
  def is_chief(self) -> bool:
    """Whether this task writes checkpoints, logs and the export.

    The chief is the "chief" task, or worker 0 when the cluster has no "chief" job (the rule of
    tf.distribute's multi_worker_util.is_chief), or the only process when TF_CONFIG is unset.
    """
    if self.task_type is None or self.task_type == CHIEF:
      return True
    return self.task_type == WORKER and self.task_id == 0 and CHIEF not in self.cluster

  def describe(self) -> str:
    if self.task_type is None:
      return "single process (TF_CONFIG unset)"
    jobs = ", ".join(f"{len(self.cluster[job])} {job}" for job in JOBS if job in self.cluster)
    return f"task {self.task_type}:{self.task_id} of a cluster with {jobs}"


def parse_tf_config(text: Optional[str]) -> ClusterTask:
  """Parse the value of TF_CONFIG; None or an empty string means a single process.

  Raises:
    DistributeError: the JSON is invalid, names a job other than chief, worker and ps, or its
      task is not a task of its cluster.
  """
  if not text or not text.strip():
    return ClusterTask()
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise DistributeError(
        f"{TF_CONFIG_VARIABLE} is not valid JSON ({e}); received {text!r}. Set it to an object "
        f"such as {_EXAMPLE_TF_CONFIG}") from None
  if not isinstance(config, dict):
    raise DistributeError(f"{TF_CONFIG_VARIABLE} must be a JSON object such as "
                          f"{_EXAMPLE_TF_CONFIG}; received {text!r}")

  cluster = _parse_cluster(config.get("cluster") or {})
  task = config.get("task") or {}
  if not cluster:
    return ClusterTask()
  task_type = task.get("type")
  if task_type not in cluster:
    raise DistributeError(
        f"{TF_CONFIG_VARIABLE} task type {task_type!r} is not a job of its cluster (jobs: "
        f"{sorted(cluster)}); set \"task\": {{\"type\": <job>, \"index\": <i>}} for this process")
  task_id = task.get("index", 0)
  if not isinstance(task_id, int) or not 0 <= task_id < len(cluster[task_type]):
    raise DistributeError(
        f"{TF_CONFIG_VARIABLE} task index {task_id!r} is out of range for job {task_type!r}, "
        f"which has {len(cluster[task_type])} tasks; use an index from 0 to "
        f"{len(cluster[task_type]) - 1}")
  return ClusterTask(cluster=cluster, task_type=task_type, task_id=task_id,
                     rpc_layer=config.get("rpc_layer") or "grpc")


def _parse_cluster(cluster) -> Dict[str, Tuple[str, ...]]:
  if not isinstance(cluster, dict):
    raise DistributeError(f"{TF_CONFIG_VARIABLE} \"cluster\" must map job names to lists of "
                          f"\"host:port\" addresses; received {cluster!r}")
  parsed = {}
  for job, addresses in cluster.items():
    if job not in JOBS:
      raise DistributeError(
          f"{TF_CONFIG_VARIABLE} cluster job {job!r} is not supported; the jobs are {JOBS} "
          "(evaluate a trained model with the export and seqmd_tf.evaluate instead)")
    if (not isinstance(addresses, list) or not addresses
        or not all(isinstance(a, str) and ":" in a for a in addresses)):
      raise DistributeError(f"{TF_CONFIG_VARIABLE} cluster job {job!r} must be a non-empty "
                            f"list of \"host:port\" addresses; received {addresses!r}")
    parsed[job] = tuple(addresses)
  return parsed


def cluster_task_from_env(environ: Mapping[str, str] = os.environ) -> ClusterTask:
  return parse_tf_config(environ.get(TF_CONFIG_VARIABLE))


def check_cluster(strategy_name: str, task: ClusterTask) -> None:
  """Raise DistributeError when the cluster of TF_CONFIG does not fit `--strategy`."""
  if strategy_name not in STRATEGIES:
    raise DistributeError(f"--strategy must be one of {STRATEGIES}, got {strategy_name!r}")
  if strategy_name in ("default", "mirrored") and task.num_tasks > 1:
    raise DistributeError(
        f"--strategy={strategy_name} trains in one process, but {TF_CONFIG_VARIABLE} describes "
        f"a cluster of {task.num_tasks} tasks; use --strategy=multi_worker or "
        f"--strategy=parameter_server, or unset {TF_CONFIG_VARIABLE}")
  if strategy_name == "multi_worker":
    if PS in task.cluster:
      raise DistributeError(
          f"--strategy=multi_worker has no parameter servers, but {TF_CONFIG_VARIABLE} lists "
          f"{len(task.cluster[PS])} ps tasks; remove the ps job or use "
          "--strategy=parameter_server")
    if len(task.cluster.get(CHIEF, ())) > 1:
      raise DistributeError(f"{TF_CONFIG_VARIABLE} may list at most one chief; received "
                            f"{list(task.cluster[CHIEF])}")
  if strategy_name == "parameter_server":
    counts = {job: len(task.cluster.get(job, ())) for job in JOBS}
    if counts[CHIEF] != 1 or counts[WORKER] < 1 or counts[PS] < 1:
      raise DistributeError(
          f"--strategy=parameter_server needs {TF_CONFIG_VARIABLE} with exactly 1 chief, at "
          f"least 1 worker and at least 1 ps task; received {counts}")


def runs_server(strategy_name: str, task: ClusterTask) -> bool:
  """Return whether this task serves a parameter_server cluster instead of training."""
  return strategy_name == "parameter_server" and task.task_type in (WORKER, PS)


def run_server(task: ClusterTask) -> None:
  """Start this task's tf.distribute.Server and block until the process is stopped.

  The chief connects to it, places variables on ps tasks and runs training steps on workers.
  """
  server = tf.distribute.Server(
      tf.train.ClusterSpec({job: list(addresses) for job, addresses in task.cluster.items()}),
      job_name=task.task_type, task_index=task.task_id, protocol=task.rpc_layer, start=True)
  logging.info("started the %s server for %s at %s", task.rpc_layer, task.describe(),
               server.target)
  server.join()


@dataclasses.dataclass
class Distribution:
  """A tf.distribute strategy and this process's task in its cluster."""

  name: str
  strategy: tf.distribute.Strategy
  task: ClusterTask

  @property
  def is_chief(self) -> bool:
    return self.task.is_chief

  @property
  def is_multi_worker(self) -> bool:
    """Whether training spans several processes (multi_worker or parameter_server)."""
    return self.name in ("multi_worker", "parameter_server")

  @property
  def num_input_pipelines(self) -> int:
    """Input pipelines that split the training files between them.

    multi_worker: one per chief or worker task. Under parameter_server the InputContext of
    every worker reports 1 pipeline (ParameterServerStrategy does not shard input), so each
    worker reads every file.
    """
    return self.task.num_training_workers if self.name == "multi_worker" else 1

  def check_training(self, batch_size: int, num_train_files: int) -> None:
    """Raise DistributeError naming the flag when training settings do not fit this strategy."""
    replicas = self.strategy.num_replicas_in_sync
    if batch_size % replicas:
      raise DistributeError(
          f"--batch_size={batch_size} is the global batch and must divide evenly among the "
          f"{replicas} replicas of --strategy={self.name}; use a multiple of {replicas}")
    if num_train_files < self.num_input_pipelines:
      raise DistributeError(
          f"--train_files matched {num_train_files} files, but --strategy={self.name} shards "
          f"the input by file over {self.num_input_pipelines} workers, each of which needs at "
          "least one file; convert the data into at least as many shards as workers (the "
          "--num_shards flag of the converters)")

  def shuffle_seed(self, seed: int):
    """Return the seed of the training shuffle: `seed`, or under parameter_server a scalar
    tf.int64 tensor that each worker evaluates from its clock when it builds its dataset.

    Every parameter_server worker runs the same traced input function over all files, so with
    one fixed seed all workers would read the lists in the same order.
    """
    if self.name != "parameter_server":
      return seed
    return tf.cast(tf.timestamp() * 1e6, tf.int64) % (2**31 - 1)

  def training_input(self, dataset_fn: Callable[[Optional[tf.distribute.InputContext]],
                                                tf.data.Dataset]):
    """Wrap `dataset_fn` as the `x` argument of Keras `Model.fit` for this strategy.

    default and mirrored: `dataset_fn(None)`, batched with the global batch size; Keras splits
    each batch among the local replicas. multi_worker and parameter_server: a DatasetCreator,
    which calls `dataset_fn` once per input pipeline with its tf.distribute.InputContext. The
    function shards the files with it (no tf.data auto-sharding is involved) and batches with
    `input_context.get_per_replica_batch_size(global batch size)`.
    """
    if not self.is_multi_worker:
      return dataset_fn(None)
    return tf.keras.utils.experimental.DatasetCreator(dataset_fn)

  def validation_input(self, dataset: Optional[tf.data.Dataset]) -> Optional[tf.data.Dataset]:
    """Return `dataset` (batched with the global batch size) as Model.fit's `validation_data`.

    multi_worker: every global batch is split among the workers (auto-shard policy DATA),
    because FILE sharding fails with fewer evaluation files than workers. parameter_server:
    None, because Keras 2.15 fails on a finite validation dataset under
    ParameterServerStrategy (OutOfRangeError); the chief still evaluates the export at the end.
    """
    if dataset is None or not self.is_multi_worker:
      return dataset
    if self.name == "parameter_server":
      logging.warning("--eval_files are not evaluated after each epoch under "
                      "--strategy=parameter_server; the chief evaluates the export at the end")
      return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

  def supported_callbacks(
      self, callbacks: List[tf.keras.callbacks.Callback]) -> List[tf.keras.callbacks.Callback]:
    """Return `callbacks` without those that Keras cannot run under this strategy.

    Under parameter_server, Keras 2.15 runs no batch-level callback hooks and `fit` raises
    ValueError for a callback that has them. Such callbacks are left out with a warning, except
    a BackupAndRestore that saves every N steps, which raises DistributeError instead of
    silently losing its checkpoints.
    """
    if self.name != "parameter_server":
      return callbacks
    kept = []
    for callback in callbacks:
      if not callback._implements_train_batch_hooks():  # pylint: disable=protected-access
        kept.append(callback)
      elif isinstance(callback, tf.keras.callbacks.BackupAndRestore):
        raise DistributeError(
            "checkpoints every N steps need batch-level callbacks, which Keras does not run "
            "under --strategy=parameter_server; drop --checkpoint_every_steps (a checkpoint is "
            "then written after each epoch) and lower --steps_per_epoch to checkpoint more often")
      else:
        logging.warning("%s is left out: Keras runs no batch-level callbacks under "
                        "--strategy=parameter_server", type(callback).__name__)
    return kept

  @contextlib.contextmanager
  def write_dir(self, path: str) -> Iterator[str]:
    """Yield the directory path this task writes in place of `path`.

    The chief gets `path`. Other tasks get `<new temporary directory>/<basename of path>`, and
    the temporary directory is deleted when the block ends, also after an exception.
    """
    if self.is_chief:
      yield path
      return
    temp_dir = tempfile.mkdtemp(prefix=f"seqmd-{self.task.task_type}{self.task.task_id}-")
    try:
      yield os.path.join(temp_dir, os.path.basename(os.path.normpath(path)))
    finally:
      shutil.rmtree(temp_dir, ignore_errors=True)


def local() -> Distribution:
  """Return the default strategy of a single process."""
  return Distribution("default", tf.distribute.get_strategy(), ClusterTask())


def create(strategy_name: str, task: ClusterTask) -> Distribution:
  """Create the strategy named by `--strategy` for `task`; call before any other TF operation.

  MultiWorkerMirroredStrategy configures the collective ops of the TF runtime, which must happen
  before the runtime starts. This call blocks until every task of a multi_worker cluster is up.
  """
  check_cluster(strategy_name, task)
  if runs_server(strategy_name, task):
    raise DistributeError(f"{task.describe()} runs a server under --strategy={strategy_name}; "
                          "call run_server instead of create")
  if strategy_name == "default":
    strategy = tf.distribute.get_strategy()
  elif strategy_name == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  elif strategy_name == "multi_worker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  else:
    strategy = _parameter_server_strategy(task)
  logging.info("strategy %s (%s) with %d replicas in sync; %s; chief: %s", strategy_name,
               type(strategy).__name__, strategy.num_replicas_in_sync, task.describe(),
               task.is_chief)
  return Distribution(strategy_name, strategy, task)


def _parameter_server_strategy(task: ClusterTask) -> tf.distribute.Strategy:
  # Lets the coordinator see a failed worker RPC and reschedule the step on another worker
  # instead of the gRPC channel failing fast (the setting of the TF parameter-server guide).
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=MIN_SHARD_BYTES, max_shards=len(task.cluster[PS]))
  return tf.distribute.ParameterServerStrategy(
      tf.distribute.cluster_resolver.TFConfigClusterResolver(), variable_partitioner=partitioner)


def variable_devices(model: tf.keras.Model) -> Dict[str, List[str]]:
  """Return {variable name: devices}: one device per shard of a ShardedVariable, else one."""
  devices = {}
  for variable in model.variables:
    shards = getattr(variable, "variables", None) or [variable]
    devices[variable.name] = [shard.device for shard in shards]
  return devices


def write_variable_devices(model: tf.keras.Model, path: str) -> None:
  """Write `variable_devices(model)` to `path` as JSON and log the number of variables on each
  device, so an overloaded parameter server can be found."""
  devices = variable_devices(model)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(devices, f, indent=2, sort_keys=True)
  counts = {}
  for shards in devices.values():
    for device in shards:
      counts[device] = counts.get(device, 0) + 1
  logging.info("variables per device: %s (all placements in %s)", counts, path)
