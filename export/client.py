r"""Send real lists to a running TF Serving model and print the re-ranked order and latency.

Examples:
  python -m export.client --server=127.0.0.1:8500 --model_name=seqmd \
    --eval_files='runs/demo/data/eval/*.tfrecord'
  python -m export.client --rest=http://127.0.0.1:8501 --model_name=seqmd \
    --eval_files='runs/demo/data/eval/*.tfrecord' --signature=predict_examples

Each request carries --batch_size lists (serving_default) or one list (predict_examples). The
first --print_lists lists are printed item by item in the model's order, with the score and
every task's logit. Latency is the client-side time of one request, after --warmup_requests
requests that are not counted.
"""

import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import app
from absl import flags

FLAGS = flags.FLAGS

SIGNATURES = ("serving_default", "predict_examples")
SCORE_OUTPUT = "score"
LATENCY_PERCENTILES = (50, 90, 99)


def score_lists(client, serialized_lists: Sequence[bytes], signature: str = "serving_default",
                batch_size: int = 1) -> tuple:
  """Score every list, `batch_size` lists per request (predict_examples: one per request).

  Args:
    client: a GrpcPredictClient or RestPredictClient of export.predict_client.
    serialized_lists: serialized ELWC protos.
    signature: "serving_default" or "predict_examples".
    batch_size: lists per serving_default request.

  Returns:
    (outputs, latencies): outputs is one dict {output name: float32 [list_size]} per list, in
    input order; latencies contains the seconds of each request.
  """
  from tensorflow_serving.apis import input_pb2  # pylint: disable=g-import-not-at-top

  if signature not in SIGNATURES:
    raise ValueError(f"--signature must be one of {SIGNATURES}, got {signature!r}")
  per_request = batch_size if signature == "serving_default" else 1
  outputs, latencies = [], []
  for start in range(0, len(serialized_lists), per_request):
    batch = serialized_lists[start:start + per_request]
    began = time.perf_counter()
    if signature == "serving_default":
      result = client.predict(batch)
    else:
      elwc = input_pb2.ExampleListWithContext.FromString(batch[0])
      result = client.predict_examples(elwc.context.SerializeToString(),
                                       [example.SerializeToString() for example in elwc.examples])
    latencies.append(time.perf_counter() - began)
    for row in range(len(batch)):
      outputs.append({name: values[row] for name, values in result.items()})
  return outputs, latencies


def rerank(list_outputs: Dict[str, np.ndarray], num_items: int) -> np.ndarray:
  """Return the item positions of one list, best first, by descending `score`.

  Only the first min(num_items, list_size) positions are real items: the model truncates
  longer lists and pads shorter ones. Ties keep the shown order.
  """
  scores = list_outputs[SCORE_OUTPUT]
  count = min(num_items, scores.shape[0])
  return np.argsort(-scores[:count], kind="stable")


def latency_summary(latencies: Sequence[float]) -> Dict[str, float]:
  """Return p50, p90, p99, max and mean of request latencies, in milliseconds."""
  values = np.asarray(latencies) * 1000.0
  summary = {f"p{p}_ms": float(np.percentile(values, p)) for p in LATENCY_PERCENTILES}
  summary["max_ms"] = float(values.max())
  summary["mean_ms"] = float(values.mean())
  return summary


def format_list(index: int, serialized: bytes, list_outputs: Dict[str, np.ndarray],
                item_id_feature: Optional[str] = None) -> str:
  """Return a table of one list's items in re-ranked order with every output."""
  from tensorflow_serving.apis import input_pb2  # pylint: disable=g-import-not-at-top

  elwc = input_pb2.ExampleListWithContext.FromString(serialized)
  num_items = len(elwc.examples)
  order = rerank(list_outputs, num_items)
  names = [SCORE_OUTPUT] + sorted(name for name in list_outputs if name != SCORE_OUTPUT)
  list_size = list_outputs[SCORE_OUTPUT].shape[0]

  header = f"list {index}: {num_items} items"
  if num_items > list_size:
    header += f", scored the first {list_size} (list_size)"
  columns = ["rank", "shown"] + ([item_id_feature] if item_id_feature else []) + names
  lines = [header, "  " + "  ".join(f"{c:>10}" for c in columns)]
  for rank, position in enumerate(order, start=1):
    cells = [str(rank), str(position)]
    if item_id_feature:
      cells.append(_feature_text(elwc.examples[position], item_id_feature))
    cells += [f"{list_outputs[name][position]:.4f}" for name in names]
    lines.append("  " + "  ".join(f"{c:>10}" for c in cells))
  return "\n".join(lines)


def _feature_text(example, name: str) -> str:
  """Return the first value of feature `name` of a tf.Example as text, "-" when missing."""
  if name not in example.features.feature:
    return "-"
  feature = example.features.feature[name]
  for values in (feature.bytes_list.value, feature.int64_list.value, feature.float_list.value):
    if values:
      value = values[0]
      return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
  return "-"


def connect(server: Optional[str], rest: Optional[str], model_name: str, timeout: float,
            connect_timeout: float = 5.0):
  """Return a gRPC client for `server` or a REST client for `rest` (exactly one is set)."""
  from export import predict_client  # pylint: disable=g-import-not-at-top

  if server:
    return predict_client.GrpcPredictClient(server, model_name, timeout=timeout,
                                            connect_timeout=connect_timeout)
  return predict_client.RestPredictClient(rest, model_name, timeout=timeout)


def define_flags() -> None:
  flags.DEFINE_string("server", None, "gRPC address of tensorflow_model_server, e.g. "
                      "127.0.0.1:8500.")
  flags.DEFINE_string("rest", None, "REST root URL of tensorflow_model_server, e.g. "
                      "http://127.0.0.1:8501.")
  flags.DEFINE_string("model_name", None, "Model name as served, e.g. seqmd.")
  flags.DEFINE_string("eval_files", None, "Comma-separated globs of ELWC TFRecord files whose "
                      "lists are sent.")
  flags.DEFINE_integer("num_lists", 200, "Lists read from --eval_files and sent.", lower_bound=1)
  flags.DEFINE_enum("signature", "serving_default", list(SIGNATURES),
                    "serving_default sends serialized ELWCs; predict_examples sends a context "
                    "tf.Example and the item tf.Examples of one list.")
  flags.DEFINE_integer("batch_size", 1, "Lists per serving_default request.", lower_bound=1)
  flags.DEFINE_integer("print_lists", 3, "Lists printed in re-ranked order.", lower_bound=0)
  flags.DEFINE_string("item_id_feature", None, "Example feature printed beside each item, e.g. "
                      "item_id. Default: only the shown position.")
  flags.DEFINE_integer("warmup_requests", 5, "Requests sent first and left out of the latency "
                       "figures.", lower_bound=0)
  flags.DEFINE_float("timeout", 10.0, "Seconds allowed per request.")
  flags.DEFINE_float("connect_timeout", 5.0, "Seconds to wait for the gRPC connection before "
                     "reporting the server unreachable.")


def main(argv):
  del argv
  if bool(FLAGS.server) == bool(FLAGS.rest):
    raise app.UsageError("pass exactly one of --server (gRPC) and --rest (REST)")
  for name in ("model_name", "eval_files"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required; see --help")

  from export import predict_client  # pylint: disable=g-import-not-at-top
  from export import records  # pylint: disable=g-import-not-at-top
  from seqmd_tf.data import InputFilesError  # pylint: disable=g-import-not-at-top

  try:
    lists = records.read_serialized_lists(FLAGS.eval_files, FLAGS.num_lists, "--eval_files")
  except InputFilesError as e:
    raise app.UsageError(str(e)) from e

  try:
    client = connect(FLAGS.server, FLAGS.rest, FLAGS.model_name, FLAGS.timeout,
                     FLAGS.connect_timeout)
    warmup = lists[:FLAGS.warmup_requests]
    score_lists(client, warmup, FLAGS.signature, 1)
    outputs, latencies = score_lists(client, lists, FLAGS.signature, FLAGS.batch_size)
  except predict_client.ServerUnreachableError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except predict_client.PredictError as e:
    print(f"error: the server rejected the request: {e}", file=sys.stderr)
    return 1

  for index in range(min(FLAGS.print_lists, len(lists))):
    print(format_list(index, lists[index], outputs[index], FLAGS.item_id_feature))
    print()
  print(format_latency(latencies, len(lists), FLAGS.signature,
                       FLAGS.server or FLAGS.rest, "gRPC" if FLAGS.server else "REST"))
  return 0


def format_latency(latencies: List[float], num_lists: int, signature: str, address: str,
                   transport: str) -> str:
  """Return the latency report printed after the lists."""
  summary = latency_summary(latencies)
  total = sum(latencies)
  return (f"{len(latencies)} {signature} requests ({num_lists} lists) to {transport} {address}: "
          f"p50 {summary['p50_ms']:.2f} ms, p90 {summary['p90_ms']:.2f} ms, "
          f"p99 {summary['p99_ms']:.2f} ms, max {summary['max_ms']:.2f} ms; "
          f"{num_lists / total:.0f} lists/s sequential")


if __name__ == "__main__":
  define_flags()
  app.run(main)
