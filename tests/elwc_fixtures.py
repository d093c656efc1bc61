"""Small hand-built feature spec and ELWC records shared by the library tests."""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import input_pb2

from seqmd_tf.feature_spec import parse_feature_spec

REGIONS = ("DE", "US", "BR")
TASKS = ("click", "purchase")

SPEC_DICT = {
    "name": "fixture",
    "list_size": 6,
    "tasks": list(TASKS),
    "region": {"feature": "region"},
    "context_features": [
        {"name": "region", "type": "categorical", "dtype": "string", "group": "region_driven",
         "vocabulary": list(REGIONS), "embedding_dim": 4},
        {"name": "filters", "type": "categorical", "dtype": "string", "group": "region_invariant",
         "vocabulary": ["wifi", "pool", "parking"], "multivalent": True, "embedding_dim": 3},
        {"name": "hour", "type": "numeric", "dtype": "int64", "group": "region_invariant"},
    ],
    "example_features": [
        {"name": "price", "type": "numeric", "dtype": "float", "group": "region_driven",
         "transform": "log1p"},
        {"name": "quality", "type": "numeric", "dtype": "float", "group": "region_invariant"},
        {"name": "item_id", "type": "hashed", "dtype": "string", "group": "region_invariant",
         "hash_buckets": 50, "embedding_dim": 4},
    ],
}


def fixture_spec():
  return parse_feature_spec(SPEC_DICT, path="fixture")


def _feature(values):
  values = list(values)
  if isinstance(values[0], (bytes, str)):
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v.encode() if isinstance(v, str) else v for v in values]))
  if isinstance(values[0], (int, np.integer)):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def make_elwc(region, hour, filters, prices, qualities, item_ids, clicks, purchases):
  """Return one serialized ELWC; a label list entry of None leaves that label out."""
  elwc = input_pb2.ExampleListWithContext()
  context = {"region": _feature([region]), "hour": _feature([hour])}
  if filters:
    context["filters"] = _feature(filters)
  elwc.context.CopyFrom(tf.train.Example(features=tf.train.Features(feature=context)))
  for price, quality, item_id, click, purchase in zip(prices, qualities, item_ids, clicks,
                                                      purchases):
    feature = {"price": _feature([price]), "quality": _feature([quality]),
               "item_id": _feature([item_id])}
    if click is not None:
      feature["click"] = _feature([int(click)])
    if purchase is not None:
      feature["purchase"] = _feature([int(purchase)])
    elwc.examples.add().CopyFrom(tf.train.Example(features=tf.train.Features(feature=feature)))
  return elwc.SerializeToString()


def random_records(num_lists, seed=0):
  """Return serialized ELWC lists whose labels follow quality (and price, by region)."""
  rng = np.random.default_rng(seed)
  records = []
  for index in range(num_lists):
    region = REGIONS[index % len(REGIONS)]
    size = int(rng.integers(2, 9))  # some lists are longer than list_size (6)
    prices = rng.uniform(10, 200, size)
    qualities = rng.normal(size=size)
    price_effect = -1.0 if region == "DE" else 1.0
    utility = 2.0 * qualities + price_effect * (np.log1p(prices) - 4.5)
    click = (utility + rng.normal(scale=0.5, size=size)) > 1.0
    purchase = click & (utility > 1.8)
    records.append(make_elwc(
        region, int(rng.integers(0, 24)), ["wifi", "pool"][: index % 3], prices, qualities,
        [f"item{rng.integers(0, 100)}" for _ in range(size)], click, purchase))
  return records


def write_records(path, records):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path
