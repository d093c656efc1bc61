"""benchmarks/serving.py runs end to end on the fixture spec (a few calls, no timing checks)."""

from tensorflow_serving.apis import input_pb2

from benchmarks import serving as benchmark
from elwc_fixtures import fixture_spec
from seqmd_tf.config import ModelConfig
from serving_stub.fixtures import SMALL_MODEL


def test_synthetic_lists_parse_with_spec():
  spec = fixture_spec()
  lists = benchmark.synthetic_lists(spec, num_lists=3, num_items=9, seed=0)
  elwc = input_pb2.ExampleListWithContext.FromString(lists[0])
  assert len(lists) == 3
  assert len(elwc.examples) == 9
  assert set(elwc.examples[0].features.feature) == {f.name for f in spec.example_features}
  assert elwc.context.features.feature["region"].bytes_list.value[0].decode() in ("DE", "US", "BR")


def test_benchmark_runs_both_models(tmp_path):
  results = benchmark.run_benchmark(fixture_spec(), list_items=9, latency_calls=12,
                                    warmup_calls=2, batch_sizes=[1, 4], throughput_lists=8,
                                    work_dir=str(tmp_path),
                                    model_config=ModelConfig(**SMALL_MODEL))
  assert set(results["latency"]) == {"seq_md", "peer"}
  for stats in results["latency"].values():
    assert stats["p50_ms"] > 0
    assert stats["p99_ms"] >= stats["p50_ms"]
  assert set(results["throughput_lists_per_s"]["peer"]) == {"1", "4"}
  assert "| seq_md / peer |" in benchmark.markdown(results)
