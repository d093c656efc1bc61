r"""Input pipeline throughput: raw reading, parsing, and the training steps that consume it.

Example (the numbers in docs/benchmarks.md):
  python -m benchmarks.input_pipeline --data_dir=/tmp/seqmd_input_benchmark \
    --output_json=/tmp/input_benchmark.json

The data are --num_lists ELWC lists of 25 items with exactly the features of
configs/trivago.json (4 context and 8 example features, 2 task labels), drawn at random and
written once to --data_dir, which later runs reuse. One run measures lists per wall-clock
second and per CPU-second of this process:
  raw_read:      tf.data.TFRecordDataset over all shards, batched, no parsing (the ceiling);
  parse:         seqmd_tf.data.make_dataset as training builds it (shuffled, parsed and
                 padded batches), one pass over the files;
  parse_cached:  the same with cache=True, second pass (parsed batches from memory);
  train steps:   seq_md, shared_bottom and a TF-Ranking DNN, each reading from its own input
                 pipeline, and seq_md on one parsed batch repeated (the model-only ceiling).
                 The DNN uses tfr.keras.pipeline's SimpleDatasetBuilder, SimplePipeline's loss
                 and metrics, and a tfr.keras.model DNNScorer as wide as seq_md's shared MLP.
The feature transforms (vocabulary lookups, log1p, clipping, standardization) run inside the
model's FeatureEncoder, together with the trainable embeddings, so the train-step numbers
include them and the input pipeline does not.

The four trainers run their timed steps in alternating rounds after a warm-up, so a busier
period of the shared machine slows all of them. The results also give the share of CPU time
that other processes took during the run.
"""

import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

DEFAULT_NUM_LISTS = 200_000
LIST_SIZE = 25  # items per generated list, the list_size of configs/trivago.json
LISTS_PER_WRITE_CHUNK = 10_000  # lists encoded per numpy batch while writing the data
MANIFEST = "manifest.json"
TFR_PEER = "tfr_dnn"


# ----------------------------------------------------------------------------------------------
# Data: random lists with the features of configs/trivago.json.


def _context_entry(spec, rng: np.random.Generator) -> bytes:
  """Return the encoded ELWC context of one random list (one value per context feature)."""
  from pipelines import elwc  # pylint: disable=g-import-not-at-top

  values, dtypes = {}, {}
  for feature in spec.context_features:
    dtypes[feature.name] = feature.dtype
    vocabulary = list(feature.vocabulary)
    if feature.multivalent:
      count = int(rng.integers(0, 4))
      values[feature.name] = [vocabulary[i] for i in rng.choice(len(vocabulary), count, False)]
    else:
      values[feature.name] = vocabulary[int(rng.integers(len(vocabulary)))]
  return elwc.encode_context_entry(elwc.make_example(values, dtypes))


def _example_columns(spec, num_lists: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """Return {name: array [num_lists * LIST_SIZE]} for every example feature and task label."""
  shape = (num_lists, LIST_SIZE)
  price = np.round(np.exp(rng.normal(4.5, 0.6, shape)))
  ranks = np.argsort(np.argsort(price, axis=1, kind="stable"), axis=1) + 1
  clicked = rng.integers(0, LIST_SIZE, num_lists)
  clickout = np.zeros(shape, dtype=np.int64)
  clickout[np.arange(num_lists), clicked] = 1
  interactions = rng.poisson(0.1, shape)
  columns = {
    "price": price,
    "price_rank": ranks,
    "price_to_list_median": price / np.median(price, axis=1, keepdims=True),
    "original_rank": np.broadcast_to(np.arange(1, LIST_SIZE + 1), shape),
    "hist_clickout": (rng.random(shape) < 0.02).astype(np.int64),
    "hist_interacted": (interactions > 0).astype(np.int64),
    "hist_interaction_count": interactions,
    "hist_impressed": (rng.random(shape) < 0.3).astype(np.int64),
    "engage": np.maximum(clickout, (rng.random(shape) < 0.03).astype(np.int64)),
    "clickout": clickout,
  }
  expected = {feature.name for feature in spec.example_features} | set(spec.tasks)
  if set(columns) != expected:
    raise ValueError(
        f"--feature_spec {spec.path} has example features and tasks {sorted(expected)}; this "
        f"generator writes {sorted(columns)}. Pass configs/trivago.json.")
  return {name: np.asarray(values).reshape(-1) for name, values in columns.items()}


def write_data(spec, data_dir: str, num_lists: int, num_shards: int, seed: int) -> List[str]:
  """Write num_lists random lists round-robin to num_shards TFRecord files; return the paths.

  A directory whose manifest records the same settings is reused as it is.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pipelines import elwc  # pylint: disable=g-import-not-at-top

  settings = {"num_lists": num_lists, "num_shards": num_shards, "seed": seed,
              "list_size": LIST_SIZE, "feature_spec": spec.to_json_dict()}
  paths = [os.path.join(data_dir, elwc.shard_filename(shard, num_shards))
           for shard in range(num_shards)]
  manifest_path = os.path.join(data_dir, MANIFEST)
  if os.path.exists(manifest_path):
    with open(manifest_path, encoding="utf-8") as manifest_file:
      if json.load(manifest_file) == settings and all(os.path.exists(p) for p in paths):
        logging.info("reusing %d lists in %s", num_lists, data_dir)
        return paths

  os.makedirs(data_dir, exist_ok=True)
  dtypes = {feature.name: feature.dtype for feature in spec.example_features}
  dtypes.update({task: elwc.INT64 for task in spec.tasks})
  rng = np.random.default_rng(seed)
  writers = [tf.io.TFRecordWriter(path) for path in paths]
  written = 0
  began = time.monotonic()
  for chunk_start in range(0, num_lists, LISTS_PER_WRITE_CHUNK):
    chunk_size = min(LISTS_PER_WRITE_CHUNK, num_lists - chunk_start)
    entries = elwc.encode_example_entries(_example_columns(spec, chunk_size, rng), dtypes)
    for index in range(chunk_size):
      items = entries[index * LIST_SIZE:(index + 1) * LIST_SIZE]
      writers[written % num_shards].write(b"".join(items) + _context_entry(spec, rng))
      written += 1
  for writer in writers:
    writer.close()
  with open(manifest_path, "w", encoding="utf-8") as manifest_file:
    json.dump(settings, manifest_file)
  logging.info("wrote %d lists to %s in %.1f s", written, data_dir, time.monotonic() - began)
  return paths


# ----------------------------------------------------------------------------------------------
# Input pipeline rates.


def process_cpu_seconds() -> float:
  """Return the user plus system CPU seconds of this process, all threads included."""
  return time.process_time()


def rates(lists: int, seconds: float, cpu_seconds: float) -> Dict[str, float]:
  """Return the counts with lists per wall-clock second and per CPU second of this process.

  On a machine shared with other jobs, the per-CPU-second rate changes less with their load.
  """
  # A very short measurement can end within one tick of the CPU clock.
  per_cpu_second = lists / cpu_seconds if cpu_seconds > 0 else float("nan")
  return {"lists": lists, "seconds": seconds, "cpu_seconds": cpu_seconds,
          "lists_per_s": lists / seconds, "lists_per_cpu_s": per_cpu_second}


def lists_per_second(dataset) -> Dict[str, float]:
  """Iterate once over `dataset` (batches with a leading batch dimension) and time it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  lists = 0
  began, cpu_began = time.monotonic(), process_cpu_seconds()
  for batch in dataset:
    first = batch[0] if isinstance(batch, tuple) else batch
    first = first if isinstance(first, tf.Tensor) else next(iter(first.values()))
    lists += int(first.shape[0])
  return rates(lists, time.monotonic() - began, process_cpu_seconds() - cpu_began)


def raw_read_dataset(files: List[str], batch_size: int):
  """Return batches of serialized records read like make_dataset reads them, unparsed."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
      tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
      num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def measure_input(spec, pattern: str, files: List[str], batch_size: int, seed: int) -> dict:
  """Return the raw_read, parse and parse_cached rates, one pass over the files each."""
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top

  results = {"raw_read": lists_per_second(raw_read_dataset(files, batch_size))}
  logging.info("raw_read: %.0f lists/s", results["raw_read"]["lists_per_s"])
  parsed = data_lib.make_dataset(pattern, spec, batch_size, shuffle=True, seed=seed)
  results["parse"] = lists_per_second(parsed)
  logging.info("parse: %.0f lists/s", results["parse"]["lists_per_s"])
  cached = data_lib.make_dataset(pattern, spec, batch_size, shuffle=True, seed=seed, cache=True)
  lists_per_second(cached)  # the first pass fills the cache
  results["parse_cached"] = lists_per_second(cached)
  logging.info("parse_cached: %.0f lists/s", results["parse_cached"]["lists_per_s"])
  return results


# ----------------------------------------------------------------------------------------------
# Training steps.


def _seqmd_trainer(spec, model_name: str, batch_size: int):
  from seqmd_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import training  # pylint: disable=g-import-not-at-top

  return training.build_trainer(spec, config_lib.ModelConfig(model=model_name),
                                config_lib.TrainConfig(batch_size=batch_size))


def _tfr_preprocessor(feature):
  """Return the TF-Ranking peer's preprocessing of one feature.

  It has the embedding sizes and numeric transforms of seqmd_tf.features.FeatureEncoder, but no
  standardization, which tfr.keras has no layer for.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if feature.type == "numeric":
    def numeric(value):
      value = tf.cast(value, tf.float32)
      if feature.transform == "log1p":
        value = tf.math.log1p(tf.maximum(value, 0.0))
      if feature.clip is not None:
        value = tf.clip_by_value(value, feature.clip[0], feature.clip[1])
      return value
    return numeric

  lookup_class = (tf.keras.layers.StringLookup if feature.dtype == "string"
                  else tf.keras.layers.IntegerLookup)
  lookup = lookup_class(vocabulary=list(feature.vocabulary),
                        num_oov_indices=feature.num_oov_buckets)
  embedding = tf.keras.layers.Embedding(len(feature.vocabulary) + feature.num_oov_buckets,
                                        feature.embedding_dim)
  if feature.multivalent:
    def bag(values):
      # Mean embedding of a list's values; a list without values gets zeros.
      summed = tf.reduce_sum(embedding(lookup(values)), axis=1)
      count = tf.cast(values.row_lengths(), tf.float32)[:, tf.newaxis]
      return summed / tf.maximum(count, 1.0)
    return bag
  return lambda values: tf.squeeze(embedding(lookup(values)), axis=-2)


def tfr_peer(spec, pattern: str, batch_size: int, model_dir: str):
  """Return (compiled model, training dataset) of TF-Ranking's pipeline for the last task.

  The dataset comes from tfr.keras.pipeline.SimpleDatasetBuilder (tfr.data ELWC parsing,
  shuffled and repeated), the loss and metrics from tfr.keras.pipeline.SimplePipeline, and the
  model from tfr.keras.model.ModelBuilder with a DNNScorer of seq_md's shared widths.
  SimplePipeline.train_and_validate is not called, because it adds TensorBoard, checkpoint and
  export steps that the seq_md measurement does not have.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_ranking as tfr  # pylint: disable=g-import-not-at-top
  from seqmd_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top

  context_spec = data_lib.context_parsing_spec(spec)
  for feature in spec.context_features:
    if feature.multivalent:
      context_spec[feature.name] = tf.io.RaggedFeature(tf.string if feature.dtype == "string"
                                                       else tf.int64)
  example_spec = data_lib.example_parsing_spec(spec, with_labels=False)
  label = spec.tasks[-1]
  label_spec = (label, tf.io.FixedLenFeature([1], tf.int64, default_value=-1))

  dataset_builder = tfr.keras.pipeline.SimpleDatasetBuilder(
      context_spec, example_spec, data_lib.MASK_FEATURE, label_spec,
      tfr.keras.pipeline.DatasetHparams(
          train_input_pattern=pattern, valid_input_pattern=pattern,
          train_batch_size=batch_size, valid_batch_size=batch_size, list_size=spec.list_size))
  model_builder = tfr.keras.model.ModelBuilder(
      input_creator=tfr.keras.model.FeatureSpecInputCreator(context_spec, example_spec),
      preprocessor=tfr.keras.model.PreprocessorWithSpec(
          {feature.name: _tfr_preprocessor(feature) for feature in spec.features}),
      scorer=tfr.keras.model.DNNScorer(
          hidden_layer_dims=list(config_lib.ModelConfig().shared_units), output_units=1,
          activation=tf.nn.relu, dropout=config_lib.ModelConfig().dropout),
      mask_feature_name=data_lib.MASK_FEATURE, name=TFR_PEER)
  pipeline = tfr.keras.pipeline.SimplePipeline(
      model_builder, dataset_builder,
      tfr.keras.pipeline.PipelineHparams(
          model_dir=model_dir, num_epochs=1, steps_per_epoch=1, validation_steps=1,
          learning_rate=config_lib.TrainConfig().learning_rate, loss="softmax_loss",
          steps_per_execution=1))
  model = model_builder.build()
  model.compile(optimizer=tf.keras.optimizers.Adam(config_lib.TrainConfig().learning_rate),
                loss=pipeline.build_loss(), metrics=pipeline.build_metrics())
  return model, dataset_builder.build_train_dataset()


def step_runner(model, dataset) -> Callable[[int], None]:
  """Return run(steps), which runs `steps` training steps of `model` on batches of `dataset`."""
  train_function = model.make_train_function()
  iterator = iter(dataset)

  def run(steps: int) -> None:
    logs = None
    for _ in range(steps):
      logs = train_function(iterator)
    # Reading a result waits for the last step to finish.
    float(logs["loss"])

  return run


def measure_training(spec, pattern: str, batch_size: int, steps: int, warmup_steps: int,
                     rounds: int, seed: int, work_dir: str) -> dict:
  """Return lists/s of training steps per model, timed in alternating rounds."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmd_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from seqmd_tf import model as model_lib  # pylint: disable=g-import-not-at-top

  def ours():
    # Unseeded, like tfr's own training dataset: the shuffle order does not change the cost.
    return data_lib.make_dataset(pattern, spec, batch_size, shuffle=True, repeat=True)

  runners = {}
  for model_name in ("seq_md", "shared_bottom"):
    tf.keras.utils.set_random_seed(seed)
    trainer = _seqmd_trainer(spec, model_name, batch_size)
    model_lib.feature_encoder(trainer.scorer).adapt(data_lib.make_dataset(
        pattern, spec, batch_size), max_batches=10)
    runners[model_name] = step_runner(trainer, ours())
    if model_name == "seq_md":
      one_batch = ours().take(1).cache().repeat()
      runners["seq_md_one_batch"] = step_runner(trainer, one_batch)
  tf.keras.utils.set_random_seed(seed)
  peer_model, peer_data = tfr_peer(spec, pattern, batch_size, os.path.join(work_dir, TFR_PEER))
  runners[TFR_PEER] = step_runner(peer_model, peer_data)

  for name, run in runners.items():
    logging.info("warming up %s for %d steps", name, warmup_steps)
    run(warmup_steps)
  seconds = {name: 0.0 for name in runners}
  cpu_seconds = {name: 0.0 for name in runners}
  steps_per_round = max(1, steps // rounds)
  for round_index in range(rounds):
    for name, run in runners.items():
      began, cpu_began = time.monotonic(), process_cpu_seconds()
      run(steps_per_round)
      seconds[name] += time.monotonic() - began
      cpu_seconds[name] += process_cpu_seconds() - cpu_began
    logging.info("training round %d of %d done", round_index + 1, rounds)
  timed_lists = steps_per_round * rounds * batch_size
  return {name: dict(rates(timed_lists, seconds[name], cpu_seconds[name]),
                     steps=steps_per_round * rounds) for name in runners}


# ----------------------------------------------------------------------------------------------
# Machine and report.


def machine() -> Dict[str, str]:
  """Return the CPU count and model, the load average, and the Python and TF versions."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_ranking as tfr  # pylint: disable=g-import-not-at-top

  cpu_model = "unknown"
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          cpu_model = line.split(":", 1)[1].strip()
          break
  return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
          "load_average_1_5_15_min": [round(load, 2) for load in os.getloadavg()],
          "python": platform.python_version(), "tensorflow": tf.__version__,
          "tensorflow_ranking": tfr.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def busy_cpu_seconds() -> Dict[str, float]:
  """Return the machine's busy CPU seconds (/proc/stat, 0 if absent) and this process's."""
  machine_busy = 0.0
  if os.path.exists("/proc/stat"):
    with open("/proc/stat", encoding="utf-8") as stat_file:
      fields = [int(value) for value in stat_file.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    machine_busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
  own = os.times()
  return {"machine": machine_busy, "own": own.user + own.system}


def run_benchmark(spec, data_dir: str, num_lists: int, num_shards: int, batch_size: int,
                  steps: int, warmup_steps: int, rounds: int, seed: int) -> dict:
  """Write or reuse the data, then measure input and training rates; return the results."""
  files = write_data(spec, data_dir, num_lists, num_shards, seed)
  pattern = os.path.join(data_dir, "*.tfrecord")
  machine_before = machine()
  began, cpu_before = time.monotonic(), busy_cpu_seconds()
  input_rates = measure_input(spec, pattern, files, batch_size, seed)
  with tempfile.TemporaryDirectory() as work_dir:
    training_rates = measure_training(spec, pattern, batch_size, steps, warmup_steps, rounds,
                                      seed, work_dir)
  cpu_after = busy_cpu_seconds()
  capacity = (time.monotonic() - began) * len(os.sched_getaffinity(0))
  other_busy = (cpu_after["machine"] - cpu_before["machine"]) - (
      cpu_after["own"] - cpu_before["own"])
  ratios = {}
  for unit in ("lists_per_s", "lists_per_cpu_s"):
    seq_md = training_rates["seq_md"][unit]
    ratios[unit] = {
        "parse_over_seq_md_train": input_rates["parse"][unit] / seq_md,
        "parse_cached_over_seq_md_train": input_rates["parse_cached"][unit] / seq_md,
        "seq_md_over_shared_bottom": seq_md / training_rates["shared_bottom"][unit],
        "seq_md_over_tfr_dnn": seq_md / training_rates[TFR_PEER][unit],
        "seq_md_over_one_batch": seq_md / training_rates["seq_md_one_batch"][unit],
    }
  return {
      "machine_at_start": machine_before,
      "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
      "other_processes_cpu_share": max(other_busy, 0.0) / capacity,
      "feature_spec": spec.path or spec.name,
      "num_lists": num_lists, "list_size": LIST_SIZE, "num_shards": num_shards,
      "batch_size": batch_size, "timed_steps": training_rates["seq_md"]["steps"],
      "input_lists_per_s": {name: rate["lists_per_s"] for name, rate in input_rates.items()},
      "train_lists_per_s": {name: rate["lists_per_s"] for name, rate in training_rates.items()},
      "input_lists_per_cpu_s": {
          name: rate["lists_per_cpu_s"] for name, rate in input_rates.items()},
      "train_lists_per_cpu_s": {
          name: rate["lists_per_cpu_s"] for name, rate in training_rates.items()},
      "input": input_rates, "train": training_rates,
      "ratios": ratios["lists_per_s"], "ratios_per_cpu_s": ratios["lists_per_cpu_s"],
  }


def markdown(results: dict) -> str:
  """Return the results as the rows of the table in docs/benchmarks.md."""
  lines = ["| measurement | lists/s | lists per CPU-second |", "|---|---|---|"]
  for stage, kind in (("input", "input"), ("train", "train step")):
    for name, rate in results[f"{stage}_lists_per_s"].items():
      per_cpu = results[f"{stage}_lists_per_cpu_s"][name]
      lines.append(f"| {kind}: {name} | {rate:,.0f} | {per_cpu:,.0f} |")
  lines += ["", "| ratio | from lists/s | from lists per CPU-second |", "|---|---|---|"]
  for key, value in results["ratios"].items():
    lines.append(f"| {key} | {value:.2f} | {results['ratios_per_cpu_s'][key]:.2f} |")
  return "\n".join(lines)


def define_flags() -> None:
  flags.DEFINE_string("feature_spec", "configs/trivago.json",
                      "Feature spec whose features the generated lists have. Only "
                      "configs/trivago.json's example features are supported.")
  flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "seqmd_input_benchmark"),
                      "Directory for the generated TFRecord files, reused by later runs with "
                      "the same --num_lists, --num_shards and --seed.")
  flags.DEFINE_integer("num_lists", DEFAULT_NUM_LISTS, "Lists to generate.", lower_bound=1)
  flags.DEFINE_integer("num_shards", 8, "TFRecord files to spread the lists over.",
                       lower_bound=1)
  flags.DEFINE_integer("batch_size", 64, "Lists per batch, as --batch_size of seqmd_tf.train.",
                       lower_bound=1)
  flags.DEFINE_integer("train_steps", 300, "Timed training steps per model.", lower_bound=1)
  flags.DEFINE_integer("warmup_steps", 30,
                       "Untimed training steps per model before timing (tracing, shuffle "
                       "buffer fill).", lower_bound=1)
  flags.DEFINE_integer("rounds", 6, "Alternating rounds that the timed steps are split into.",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the generated data, the shuffles and the weights.")
  flags.DEFINE_string("output_json", None, "Write the results to this JSON file.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from seqmd_tf.feature_spec import load_feature_spec  # pylint: disable=g-import-not-at-top

  spec = load_feature_spec(FLAGS.feature_spec)
  results = run_benchmark(spec, FLAGS.data_dir, FLAGS.num_lists, FLAGS.num_shards,
                          FLAGS.batch_size, FLAGS.train_steps, FLAGS.warmup_steps,
                          FLAGS.rounds, FLAGS.seed)
  results["command"] = " ".join(["python -m benchmarks.input_pipeline"] + sys.argv[1:])
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w", encoding="utf-8") as output_file:
      json.dump(results, output_file, indent=2)
  print(json.dumps(results["machine_at_start"]))
  print(f"other processes used {results['other_processes_cpu_share']:.0%} of the CPU time")
  print(markdown(results))


if __name__ == "__main__":
  define_flags()
  app.run(main)
