r"""Serving latency and throughput of the SEQ+MD export against a plain TF-Ranking DNN export.

Example (the numbers in docs/benchmarks.md):
  python -m benchmarks.serving --feature_spec=configs/trivago.json \
    --output_json=/tmp/serving_benchmark.json

Both models are built fresh from the feature spec (weights do not change the cost), exported as
SavedModels with a `serving_default` signature on serialized ELWC, loaded back with
tf.saved_model.load and called in this process:
  seq_md: seqmd_tf.model.build_scorer with the default ModelConfig, exported by
    export.saved_model (request checks, parser padding to list_size, region mask, GRU chain).
  peer:   a tfr.keras.model.ModelBuilder with a DNNScorer of the same widths as seq_md's shared
    MLP, the same features (embeddings of the same sizes, the same numeric transforms), exported
    with tfr.keras.saved_model.Signatures.
The requests are synthetic lists built from the spec. Latency: one list of --list_items items
per call, --latency_calls timed calls after --warmup_calls untimed ones. Throughput: lists per
second at each --batch_sizes. The two models run in alternating rounds, so a slower period of
the machine affects both.
"""

import datetime
import gc
import json
import os
import platform
import tempfile
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

# Timed calls are split into this many rounds that alternate between the two models.
ROUNDS = 10
PERCENTILES = (50, 90, 99)


# Synthetic requests.


def synthetic_value(feature, rng: np.random.Generator):
  """Return one random value list for a spec feature, in its dtype."""
  if feature.vocabulary is not None:
    count = int(rng.integers(0, 4)) if feature.multivalent else 1
    picks = rng.choice(len(feature.vocabulary), size=count, replace=False)
    return [feature.vocabulary[i] for i in picks]
  if feature.type == "hashed":
    return [f"{feature.name}_{rng.integers(0, 1_000_000)}" if feature.dtype == "string"
            else int(rng.integers(0, 1_000_000))]
  if feature.dtype == "int64":
    return [int(rng.integers(0, 50))]
  return [float(rng.lognormal(3.0, 1.0))]


def synthetic_lists(spec, num_lists: int, num_items: int, seed: int) -> List[bytes]:
  """Return serialized ELWC lists of `num_items` items with random values of every feature."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import input_pb2  # pylint: disable=g-import-not-at-top

  def to_feature(values, dtype):
    if dtype == "string":
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values]))
    if dtype == "int64":
      return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  rng = np.random.default_rng(seed)
  lists = []
  for _ in range(num_lists):
    elwc = input_pb2.ExampleListWithContext()
    for feature in spec.context_features:
      values = synthetic_value(feature, rng)
      if values:
        elwc.context.features.feature[feature.name].CopyFrom(to_feature(values, feature.dtype))
    for _ in range(num_items):
      example = elwc.examples.add()
      for feature in spec.example_features:
        example.features.feature[feature.name].CopyFrom(
            to_feature(synthetic_value(feature, rng), feature.dtype))
    lists.append(elwc.SerializeToString())
  return lists


# The two exports.


def export_seqmd(spec, model_config, export_dir: str) -> str:
  """Export a freshly built SEQ+MD scorer; return the version path."""
  from export.saved_model import export_saved_model  # pylint: disable=g-import-not-at-top
  from seqmd_tf import model as model_lib  # pylint: disable=g-import-not-at-top

  scorer = model_lib.build_scorer(spec, model_config)
  return export_saved_model(scorer, spec, export_dir, version=1, overwrite=True)


def _peer_preprocessor(feature):
  """Return the peer's preprocessing function of one feature: the same embedding sizes and
  numeric transforms as seqmd_tf.features.FeatureEncoder, with Keras layers only."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if feature.type == "numeric":
    def numeric(value):
      value = tf.cast(value, tf.float32)
      if feature.transform == "log1p":
        value = tf.math.log1p(tf.maximum(value, 0.0))
      elif feature.transform == "symlog":
        value = tf.sign(value) * tf.math.log1p(tf.abs(value))
      if feature.clip is not None:
        value = tf.clip_by_value(value, feature.clip[0], feature.clip[1])
      return value
    return numeric

  if feature.type == "hashed":
    lookup = tf.keras.layers.Hashing(feature.hash_buckets)
    size = feature.hash_buckets
  else:
    lookup_class = (tf.keras.layers.StringLookup if feature.dtype == "string"
                    else tf.keras.layers.IntegerLookup)
    lookup = lookup_class(vocabulary=list(feature.vocabulary),
                          num_oov_indices=feature.num_oov_buckets)
    size = len(feature.vocabulary) + feature.num_oov_buckets
  embedding = tf.keras.layers.Embedding(size, feature.embedding_dim)

  if feature.multivalent:
    def bag(values):
      # Mean embedding of the values; a list without values gets zeros.
      summed = tf.reduce_sum(embedding(lookup(values)), axis=1)
      count = tf.cast(values.row_lengths(), tf.float32)[:, tf.newaxis]
      return summed / tf.maximum(count, 1.0)
    return bag
  return lambda values: tf.squeeze(embedding(lookup(values)), axis=-2)


def export_peer(spec, model_config, export_dir: str) -> str:
  """Export a TF-Ranking DNN ranker on the same features, with the widths of
  `model_config.shared_units`; return the version path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_ranking as tfr  # pylint: disable=g-import-not-at-top
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top

  context_spec = data_lib.context_parsing_spec(spec)
  for feature in spec.context_features:
    if feature.multivalent:
      context_spec[feature.name] = tf.io.RaggedFeature(data_lib._TF_DTYPES[feature.dtype])  # pylint: disable=protected-access
  example_spec = data_lib.example_parsing_spec(spec, with_labels=False)

  builder = tfr.keras.model.ModelBuilder(
      input_creator=tfr.keras.model.FeatureSpecInputCreator(context_spec, example_spec),
      preprocessor=tfr.keras.model.PreprocessorWithSpec(
          {feature.name: _peer_preprocessor(feature) for feature in spec.features}),
      scorer=tfr.keras.model.DNNScorer(
          hidden_layer_dims=list(model_config.shared_units), output_units=1,
          activation=tf.nn.relu),
      mask_feature_name=data_lib.MASK_FEATURE, name="tfr_dnn")
  model = builder.build()
  signatures = tfr.keras.saved_model.Signatures(model, context_spec, example_spec,
                                                data_lib.MASK_FEATURE)(serving_default="predict")
  path = os.path.join(export_dir, "1")
  tf.saved_model.save(model, path, signatures=signatures)
  return path


def load_serving_function(path: str) -> Callable:
  """Return a function batch -> outputs that calls the SavedModel's serving_default."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  signature = tf.saved_model.load(path).signatures["serving_default"]
  input_name = list(signature.structured_input_signature[1])[0]
  return lambda batch: signature(**{input_name: batch})


# Measurements.


def time_calls(function: Callable, batch, calls: int) -> List[float]:
  """Return the seconds of each of `calls` calls of `function(batch)`.

  Python's garbage collector is paused while timing: its pauses belong to this process, not to
  the model, and a model server such as TF Serving runs no Python.
  """
  seconds = []
  gc.collect()
  gc.disable()
  try:
    for _ in range(calls):
      began = time.perf_counter()
      function(batch)
      seconds.append(time.perf_counter() - began)
  finally:
    gc.enable()
  return seconds


def alternate(functions: Dict[str, Callable], batch, calls: int) -> Dict[str, List[float]]:
  """Time `calls` calls per function, in ROUNDS rounds that alternate between the functions."""
  seconds = {name: [] for name in functions}
  per_round = max(1, calls // ROUNDS)
  while min(len(values) for values in seconds.values()) < calls:
    for name, function in functions.items():
      seconds[name].extend(time_calls(function, batch, per_round))
  return {name: values[:calls] for name, values in seconds.items()}


def latency_stats(seconds: Sequence[float]) -> Dict[str, float]:
  values = np.asarray(seconds) * 1000.0
  stats = {f"p{p}_ms": float(np.percentile(values, p)) for p in PERCENTILES}
  stats["mean_ms"] = float(values.mean())
  return stats


def machine() -> Dict[str, str]:
  """Return the CPU count, CPU model, Python and TensorFlow versions of this machine."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_ranking as tfr  # pylint: disable=g-import-not-at-top

  cpu_model = "unknown"
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu_model = line.split(":", 1)[1].strip()
          break
  return {"nproc": str(len(os.sched_getaffinity(0))), "cpu_model": cpu_model,
          "python": platform.python_version(), "tensorflow": tf.__version__,
          "tensorflow_ranking": tfr.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def cpu_seconds() -> Dict[str, float]:
  """Return the machine's busy CPU seconds (all processes, /proc/stat) and this process's.

  The difference between two readings is the CPU time other processes took during a run. That
  load inflates the tail latencies, so the results report it. Without /proc/stat, "machine" is 0.
  """
  machine_busy = 0.0
  if os.path.exists("/proc/stat"):
    with open("/proc/stat", encoding="utf-8") as f:
      fields = [int(value) for value in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    machine_busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
  own = os.times()
  return {"machine": machine_busy, "own": own.user + own.system}


def run_benchmark(spec, list_items: int, latency_calls: int, warmup_calls: int,
                  batch_sizes: Sequence[int], throughput_lists: int, work_dir: str,
                  seed: int = 0, model_config=None) -> dict:
  """Export both models, then measure latency and throughput; return the results dict.

  `model_config` defaults to seqmd_tf.config.ModelConfig(), the training defaults.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmd_tf import config as config_lib  # pylint: disable=g-import-not-at-top

  model_config = model_config or config_lib.ModelConfig()
  tf.keras.utils.set_random_seed(seed)
  paths = {"seq_md": export_seqmd(spec, model_config, os.path.join(work_dir, "seq_md")),
           "peer": export_peer(spec, model_config, os.path.join(work_dir, "peer"))}
  functions = {name: load_serving_function(path) for name, path in paths.items()}
  lists = synthetic_lists(spec, max(batch_sizes), list_items, seed)

  began, cpu_before = time.monotonic(), cpu_seconds()
  one_list = tf.constant(lists[:1])
  for function in functions.values():
    time_calls(function, one_list, warmup_calls)
  logging.info("timing %d single-list calls per model", latency_calls)
  latency = {name: latency_stats(seconds)
             for name, seconds in alternate(functions, one_list, latency_calls).items()}

  throughput = {name: {} for name in functions}
  for batch_size in batch_sizes:
    batch = tf.constant(lists[:batch_size])
    for function in functions.values():
      time_calls(function, batch, max(2, warmup_calls // 10))
    calls = max(ROUNDS, throughput_lists // batch_size)
    logging.info("timing %d calls of batch %d per model", calls, batch_size)
    for name, seconds in alternate(functions, batch, calls).items():
      throughput[name][str(batch_size)] = batch_size * len(seconds) / sum(seconds)

  cpu_after = cpu_seconds()
  capacity = (time.monotonic() - began) * len(os.sched_getaffinity(0))
  other_busy = (cpu_after["machine"] - cpu_before["machine"]) - (cpu_after["own"] - cpu_before["own"])
  return {
      "feature_spec": spec.path or spec.name,
      "other_processes_cpu_share": max(other_busy, 0.0) / capacity,
      "list_items": list_items, "list_size": spec.list_size,
      "latency_calls": latency_calls, "warmup_calls": warmup_calls,
      "machine": machine(),
      "latency": latency,
      "throughput_lists_per_s": throughput,
      "latency_ratio_p50": latency["seq_md"]["p50_ms"] / latency["peer"]["p50_ms"],
      "latency_ratio_p99": latency["seq_md"]["p99_ms"] / latency["peer"]["p99_ms"],
  }


def markdown(results: dict) -> str:
  """Return the results as the markdown tables of docs/benchmarks.md."""
  lines = ["| model | p50 ms | p90 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
  for name, stats in results["latency"].items():
    lines.append(f"| {name} | {stats['p50_ms']:.3f} | {stats['p90_ms']:.3f} | "
                 f"{stats['p99_ms']:.3f} | {stats['mean_ms']:.3f} |")
  lines.append(f"| seq_md / peer | {results['latency_ratio_p50']:.2f} | | "
               f"{results['latency_ratio_p99']:.2f} | |")
  lines.append("")
  batch_sizes = list(next(iter(results["throughput_lists_per_s"].values())))
  lines.append("| model | " + " | ".join(f"batch {b} lists/s" for b in batch_sizes) + " |")
  lines.append("|---|" + "---|" * len(batch_sizes))
  rates = results["throughput_lists_per_s"]
  for name, per_batch in rates.items():
    lines.append(f"| {name} | " + " | ".join(f"{per_batch[b]:.0f}" for b in batch_sizes) + " |")
  lines.append("| seq_md / peer | " + " | ".join(
      f"{rates['seq_md'][b] / rates['peer'][b]:.2f}" for b in batch_sizes) + " |")
  return "\n".join(lines)


def define_flags() -> None:
  flags.DEFINE_string("feature_spec", "configs/trivago.json", "Feature spec JSON of the "
                      "requests and models.")
  flags.DEFINE_integer("list_items", 25, "Items per synthetic list.", lower_bound=1)
  flags.DEFINE_integer("latency_calls", 1000, "Timed single-list calls per model.", lower_bound=1)
  flags.DEFINE_integer("warmup_calls", 100, "Untimed calls per model before timing.",
                       lower_bound=1)
  flags.DEFINE_list("batch_sizes", ["1", "16", "64"], "Lists per call for the throughput runs.")
  flags.DEFINE_integer("throughput_lists", 20000, "Lists scored per model and batch size in the "
                       "throughput runs.", lower_bound=1)
  flags.DEFINE_string("output_json", None, "Also write the results to this JSON file.")
  flags.DEFINE_string("work_dir", None, "Directory for the two SavedModels; default: a "
                      "temporary directory that is deleted at the end.")
  flags.DEFINE_integer("seed", 0, "Seed of the weights and the synthetic lists.")


def main(argv):
  del argv
  from seqmd_tf.feature_spec import FeatureSpecError, load_feature_spec  # pylint: disable=g-import-not-at-top

  try:
    spec = load_feature_spec(FLAGS.feature_spec)
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
  except (FeatureSpecError, ValueError) as e:
    raise app.UsageError(str(e)) from e

  with tempfile.TemporaryDirectory() as temp_dir:
    results = run_benchmark(spec, FLAGS.list_items, FLAGS.latency_calls, FLAGS.warmup_calls,
                            batch_sizes, FLAGS.throughput_lists, FLAGS.work_dir or temp_dir,
                            FLAGS.seed)
  print(json.dumps(results["machine"]))
  print(f"other processes used {results['other_processes_cpu_share']:.0%} of the CPU time "
        "during the measurements")
  print(markdown(results))
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
