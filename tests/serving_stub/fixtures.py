"""Small scorer, exports and reference scores shared by the serving tests."""

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from elwc_fixtures import fixture_spec, random_records
from export.saved_model import export_saved_model
from seqmd_tf import config as config_lib
from seqmd_tf import data as data_lib
from seqmd_tf import model as model_lib

MODEL_NAME = "seqmd_test"
# Small widths keep export and scoring fast; dropout 0 makes training=True irrelevant.
SMALL_MODEL = dict(shared_units=(16,), gru_units=8, mask_hidden_units=(8,), tower_units=(8,),
                   dropout=0.0)


def build_scorer(seed: int = 0) -> tf.keras.Model:
  """Return a freshly built fixture-spec scorer whose normalization fits `random_records`."""
  spec = fixture_spec()
  tf.keras.utils.set_random_seed(seed)
  scorer = model_lib.build_scorer(spec, config_lib.ModelConfig(**SMALL_MODEL))
  batch = data_lib.parse_elwc(tf.constant(random_records(64, seed=seed)), spec)
  model_lib.feature_encoder(scorer).adapt(tf.data.Dataset.from_tensors(batch))
  return scorer


def export_scorer(scorer: tf.keras.Model, export_dir: str, version: int = 1,
                  warmup_lists: Sequence[bytes] = ()) -> str:
  return export_saved_model(scorer, fixture_spec(), export_dir, version,
                            warmup_lists=warmup_lists, model_name=MODEL_NAME)


def reference_outputs(scorer: tf.keras.Model, serialized_lists: Sequence[bytes]
                      ) -> Dict[str, np.ndarray]:
  """Score lists in process: the training parser, then the Keras scorer, in one batch.

  Returns {output name: float32 [num_lists, list_size]}.
  """
  spec = fixture_spec()
  features, _ = data_lib.parse_elwc(tf.constant(list(serialized_lists)), spec)
  outputs = scorer(features, training=False)
  return {name: outputs[name].numpy() for name in ("score",) + spec.tasks}
