"""saved_model_cli on the export: `show` lists both signatures, `run` scores as in process.

Which `run` input flags work for a string tensor of serialized ELWC protos:
  --inputs examples=<file>.npy     an object array of bytes (saved_model_cli loads it with
                                   allow_pickle=True); the robust choice.
  --input_exprs 'examples=[b"..."]'  a bytes literal; the flag is split at every ';', so write
                                   each byte as \\xNN (see `bytes_literal`).
  --input_examples                  builds tf.Examples from feature lists, not ELWCs, so it only
                                   fits the `examples` input of predict_examples.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from tensorflow_serving.apis import input_pb2

from elwc_fixtures import random_records
from serving_stub.fixtures import build_scorer, export_scorer, reference_outputs

CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
OUTPUTS = ("score", "click", "purchase")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def scorer():
  return build_scorer(seed=5)


@pytest.fixture(scope="module")
def lists():
  return random_records(4, seed=7)


@pytest.fixture(scope="module")
def exported(scorer, tmp_path_factory):
  return export_scorer(scorer, str(tmp_path_factory.mktemp("cli") / "model"), version=1)


def bytes_literal(data: bytes) -> str:
  """Return a Python bytes literal with every byte escaped, so it contains no ';' or quote."""
  return 'b"' + "".join(f"\\x{byte:02x}" for byte in data) + '"'


def run_cli(exported, signature, outdir, *input_flags):
  """Run `saved_model_cli run` and return its outputs {name: array} read from --outdir."""
  subprocess.run([CLI, "run", "--dir", exported, "--tag_set", "serve", "--signature_def",
                  signature, "--outdir", str(outdir), *input_flags],
                 check=True, capture_output=True, text=True, timeout=300)
  return {name: np.load(outdir / f"{name}.npy") for name in OUTPUTS}


def assert_matches(actual, expected):
  for name in OUTPUTS:
    np.testing.assert_allclose(actual[name], expected[name], atol=TOLERANCE, err_msg=name)


def test_show_lists_both_signatures(exported):
  output = subprocess.run([CLI, "show", "--dir", exported, "--all"], check=True,
                         capture_output=True, text=True, timeout=300).stdout
  assert "signature_def['serving_default']" in output
  assert "signature_def['predict_examples']" in output
  assert "inputs['context'] tensor_info:" in output
  assert "outputs['purchase'] tensor_info:" in output


def test_run_inputs_npy_matches(exported, scorer, lists, tmp_path):
  npy = tmp_path / "examples.npy"
  np.save(npy, np.array(lists, dtype=object), allow_pickle=True)
  actual = run_cli(exported, "serving_default", tmp_path / "out", "--inputs", f"examples={npy}")
  assert_matches(actual, reference_outputs(scorer, lists))


def test_run_input_exprs_matches(exported, scorer, lists, tmp_path):
  expression = "[" + ",".join(bytes_literal(record) for record in lists[:2]) + "]"
  actual = run_cli(exported, "serving_default", tmp_path / "out",
                   "--input_exprs", f"examples={expression}")
  assert_matches(actual, reference_outputs(scorer, lists[:2]))


def test_run_input_examples_predict_examples(exported, scorer, tmp_path):
  items = [{"price": [40.0], "quality": [0.3], "item_id": ["item5"]},
           {"price": [95.5], "quality": [-0.8], "item_id": ["item17"]},
           {"price": [12.0], "quality": [1.2], "item_id": ["item2"]}]
  elwc = input_pb2.ExampleListWithContext()
  context = elwc.context.features.feature
  context["region"].bytes_list.value.append(b"US")
  context["hour"].int64_list.value.append(20)
  context["filters"].bytes_list.value.extend([b"wifi", b"parking"])
  for item in items:
    feature = elwc.examples.add().features.feature
    feature["price"].float_list.value.extend(item["price"])
    feature["quality"].float_list.value.extend(item["quality"])
    feature["item_id"].bytes_list.value.append(item["item_id"][0].encode())

  actual = run_cli(exported, "predict_examples", tmp_path / "out",
                   "--input_examples", f"examples={items!r}",
                   "--input_exprs", f"context={bytes_literal(elwc.context.SerializeToString())}")
  assert_matches(actual, reference_outputs(scorer, [elwc.SerializeToString()]))
