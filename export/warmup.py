"""TF Serving warmup requests: `assets.extra/tf_serving_warmup_requests` in a SavedModel.

TF Serving replays these PredictionLog records when it loads a version, before the version
serves traffic, so the first real requests do not pay for graph initialization. A record that
fails makes the load fail, so only `serving_default` requests are written: `predict_examples`
has a scalar input, which a server started with --enable_batching rejects.
"""

import os
from typing import List, Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

ASSETS_EXTRA = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
# Requests of one list each, then one request holding several lists, so that both the
# single-list path and a batched shape are initialized.
SINGLE_LIST_REQUESTS = 3
# Lists in the batched request; kept below the max_batch_size of batching_parameters.txt, since
# a warmup request larger than a server's max_batch_size fails the load.
MAX_LISTS_PER_REQUEST = 8

_SIGNATURE = "serving_default"
_INPUT = "examples"


def warmup_records(serialized_lists: Sequence[bytes], model_name: str = "") -> List[bytes]:
  """Build serialized PredictionLog records for the `serving_default` signature.

  Args:
    serialized_lists: serialized ELWC protos, for example the first lists of the eval files.
    model_name: written into each request's model_spec (TF Serving ignores it during warmup).

  Returns:
    Serialized PredictionLog protos: one request per list for the first SINGLE_LIST_REQUESTS
    lists, then one request with up to MAX_LISTS_PER_REQUEST lists.
  """
  if not serialized_lists:
    raise ValueError("warmup needs at least one serialized ELWC list, got none")
  batches = [[record] for record in serialized_lists[:SINGLE_LIST_REQUESTS]]
  if len(serialized_lists) > 1:
    batches.append(list(serialized_lists[:MAX_LISTS_PER_REQUEST]))

  records = []
  for batch in batches:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=_SIGNATURE))
    request.inputs[_INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    records.append(log.SerializeToString())
  return records


def write_warmup_file(saved_model_dir: str, records: Sequence[bytes]) -> str:
  """Write `records` as a TFRecord file at `assets.extra/tf_serving_warmup_requests`."""
  directory = os.path.join(saved_model_dir, ASSETS_EXTRA)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, WARMUP_FILENAME)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


def read_warmup_requests(saved_model_dir: str) -> List[predict_pb2.PredictRequest]:
  """Return the PredictRequests of a SavedModel's warmup file; [] when it has none."""
  path = os.path.join(saved_model_dir, ASSETS_EXTRA, WARMUP_FILENAME)
  if not os.path.exists(path):
    return []
  requests = []
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    requests.append(log.predict_log.request)
  return requests
