"""TF Serving configuration files written next to the exported models.

The files go to `<export_base>`, beside the `<model_name>/<version>/` directories:
  models.config            model_config_list for --model_config_file, with host paths;
  models.docker.config     the same list with base paths under /models, for the
                           tensorflow/serving image with `<export_base>` mounted at /models;
  batching_parameters.txt  for --enable_batching --batching_parameters_file;
  monitoring.config        for --monitoring_config_file (Prometheus metrics on the REST port).

docs/serving.md shows the server commands that use them.
"""

import os
from typing import Dict, List, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

MODELS_CONFIG = "models.config"
DOCKER_MODELS_CONFIG = "models.docker.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
MONITORING_CONFIG = "monitoring.config"
# Model directory of the tensorflow/serving image; docs/serving.md mounts <export_base> there.
DOCKER_MODELS_ROOT = "/models"
# TF Serving's default Prometheus path, served on --rest_api_port.
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# Versions kept loaded per model: the newest one, so a new version replaces the old one once
# it has loaded and warmed up.
DEFAULT_NUM_VERSIONS = 1

# Field names and defaults follow tensorflow_serving/servables/tensorflow/
# session_bundle_config.proto (BatchingParameters). The values are a starting point for CPU
# serving of lists of 25 to 100 items; measure with benchmarks/serving.py and tune per machine.
BATCHING_PARAMETERS_TEXT = """\
# BatchingParameters for tensorflow_model_server --enable_batching
#   --batching_parameters_file=<this file>. Applies to every model the server loads.
# Largest batch, counted in lists (dimension 0 of the `examples` input).
max_batch_size { value: 64 }
# Maximum wait, in microseconds, for more requests before a partial batch runs.
batch_timeout_micros { value: 1000 }
# Batches waiting in the queue before new requests are rejected with UNAVAILABLE.
max_enqueued_batches { value: 100 }
# Threads that run batches; set it to the number of CPU cores of the serving machine.
num_batch_threads { value: 4 }
"""

MONITORING_CONFIG_TEXT = f"""\
# MonitoringConfig for tensorflow_model_server --monitoring_config_file=<this file>.
# Prometheus metrics are served on --rest_api_port at this path.
prometheus_config {{
  enable: true
  path: "{PROMETHEUS_PATH}"
}}
"""


def model_names(export_base: str) -> List[str]:
  """Return the names of the subdirectories of `export_base` that hold a numeric version."""
  names = []
  for name in sorted(os.listdir(export_base)):
    path = os.path.join(export_base, name)
    if os.path.isdir(path) and not name.startswith(".") and any(
        child.isdigit() for child in os.listdir(path)):
      names.append(name)
  return names


def models_config_text(names: List[str], models_root: str,
                       num_versions: int = DEFAULT_NUM_VERSIONS, existing_text: str = "") -> str:
  """Return a ModelServerConfig text proto serving `<models_root>/<name>` for each name.

  Models already in `existing_text` (a previous models.config) keep their entry, including a
  hand-edited version policy or labels; only missing names are added.
  """
  config = model_server_config_pb2.ModelServerConfig()
  if existing_text:
    text_format.Parse(existing_text, config)
  listed = {model.name for model in config.model_config_list.config}
  for name in names:
    if name in listed:
      continue
    model = config.model_config_list.config.add(
        name=name, base_path=f"{models_root.rstrip('/')}/{name}", model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = num_versions
  return text_format.MessageToString(config)


def write_server_configs(export_base: str, num_versions: int = DEFAULT_NUM_VERSIONS,
                         docker_models_root: Optional[str] = DOCKER_MODELS_ROOT) -> Dict[str, str]:
  """Write or update the configuration files in `export_base`; return {file name: path}.

  Each model list gains an entry for every model under `export_base` that it lacks. Entries
  already there stay as they are, so a pinned version survives the next export. The batching
  and monitoring files are written only when missing, to keep hand tuning.
  """
  export_base = os.path.abspath(export_base)
  names = model_names(export_base)
  if not names:
    raise ValueError(f"{export_base} contains no <model_name>/<version>/ directory; export a model "
                     "first")
  model_lists = {MODELS_CONFIG: export_base}
  if docker_models_root:
    model_lists[DOCKER_MODELS_CONFIG] = docker_models_root

  paths = {}
  for filename, models_root in model_lists.items():
    path = os.path.join(export_base, filename)
    text = models_config_text(names, models_root, num_versions, _read_if_exists(path))
    paths[filename] = _write_atomically(path, text)
  for filename, text in ((BATCHING_PARAMETERS, BATCHING_PARAMETERS_TEXT),
                         (MONITORING_CONFIG, MONITORING_CONFIG_TEXT)):
    path = os.path.join(export_base, filename)
    paths[filename] = path if os.path.exists(path) else _write_atomically(path, text)
  return paths


def _read_if_exists(path: str) -> str:
  if not os.path.exists(path):
    return ""
  with open(path, encoding="utf-8") as f:
    return f.read()


def _write_atomically(path: str, text: str) -> str:
  """Write `text` to `path` through a temporary file, so a server that re-reads the file
  (--model_config_file_poll_wait_seconds) never reads half of it."""
  temp_path = f"{path}.tmp-{os.getpid()}"
  with open(temp_path, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(temp_path, path)
  return path
