"""One configuration object for a model and its training, built from flags by `train.py`."""

import dataclasses
import json
import numbers
from typing import Optional, Tuple

# Every value of --model. `seqmd_tf.model.MODEL_BODIES` maps each name to its body. The names
# live here so that `train.py` can parse its flags before TensorFlow is imported.
MODEL_NAMES = ("single_task", "shared_bottom", "mmoe", "ple", "adatt", "esmm", "aitm", "seq",
               "seq_md")
REGION_MASK_MODES = ("off", "feature", "element")
MASK_GATES = ("2sigmoid", "sigmoid")
LOSSES = ("softmax", "approx_ndcg", "list_mle")
INITIAL_STATES = ("zeros", "dense")


@dataclasses.dataclass
class ModelConfig:
  """Architecture of a multi-task ranking model. Widths are numbers of units."""

  model: str = "seq_md"
  region_mask: str = "element"
  mask_hidden_units: Tuple[int, ...] = (32,)
  mask_gate: str = "2sigmoid"
  shared_units: Tuple[int, ...] = (128, 64)
  dropout: float = 0.1
  list_context: bool = True
  gru_units: int = 32
  tower_units: Tuple[int, ...] = (16,)
  initial_state: str = "zeros"
  task_embedding: bool = False
  # Mixture-of-experts baselines. Each expert is a ReLU MLP with widths `expert_units`. The
  # default equals `shared_units`, so an expert has the capacity of the shared-bottom MLP.
  num_experts: int = 4  # MMoE: experts shared by all tasks.
  expert_units: Tuple[int, ...] = (128, 64)
  num_task_experts: int = 2  # PLE and AdaTT: experts owned by each task, per level.
  num_shared_experts: int = 2  # PLE (>= 1) and AdaTT (0 gives AdaTT-sp): shared, per level.
  ple_levels: int = 2  # PLE extraction layers. One layer is CGC.
  adatt_levels: int = 2  # AdaTT fusion levels.
  # AITM: width k of the AIT attention. 64 equals shared_units[-1], the width d of each task's
  # representation, so k = d as in the authors' code.
  aitm_units: int = 64
  # Serving score = sum of weight * task logit; None means the last task's logit alone.
  score_weights: Optional[Tuple[float, ...]] = None

  def validate(self, num_tasks: int) -> None:
    """Raise ValueError naming the flag when a value is out of its allowed set."""
    if self.region_mask not in REGION_MASK_MODES:
      raise ValueError(f"--region_mask must be one of {REGION_MASK_MODES}, got {self.region_mask!r}")
    if self.mask_gate not in MASK_GATES:
      raise ValueError(f"--mask_gate must be one of {MASK_GATES}, got {self.mask_gate!r}")
    if self.initial_state not in INITIAL_STATES:
      raise ValueError(f"initial_state must be one of {INITIAL_STATES}, got {self.initial_state!r}")
    if self.model not in MODEL_NAMES:
      raise ValueError(f"--model must be one of {MODEL_NAMES}, got {self.model!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
    self._validate_expert_settings()
    if self.score_weights is not None and len(self.score_weights) != num_tasks:
      raise ValueError(
          f"--score_weights has {len(self.score_weights)} values but the feature spec has "
          f"{num_tasks} tasks; give one weight per task in funnel order")

  def _validate_expert_settings(self) -> None:
    """Raise ValueError naming the flag when an expert or AITM setting is out of range."""
    if not self.expert_units or not all(_is_int_at_least(u, 1) for u in self.expert_units):
      raise ValueError(f"--expert_units must be one or more widths > 0, e.g. 128,64, got "
                       f"{list(self.expert_units)}")
    for name in ("num_experts", "num_task_experts", "ple_levels", "adatt_levels", "aitm_units"):
      if not _is_int_at_least(getattr(self, name), 1):
        raise ValueError(f"--{name} must be an integer >= 1, got {getattr(self, name)!r}")
    if not _is_int_at_least(self.num_shared_experts, 0):
      raise ValueError(f"--num_shared_experts must be an integer >= 0, got "
                       f"{self.num_shared_experts!r}")
    if self.model == "ple" and self.num_shared_experts < 1:
      raise ValueError(f"--num_shared_experts must be >= 1 for --model=ple, because PLE shares "
                       f"information between tasks only through shared experts, got "
                       f"{self.num_shared_experts}")


def _is_int_at_least(value, minimum: int) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


@dataclasses.dataclass
class TrainConfig:
  """Optimization and loss settings. `epochs` counts passes over the training files."""

  loss: str = "softmax"
  task_weights: Optional[Tuple[float, ...]] = None
  dpr_weight: float = 0.1
  pointwise_weight: float = 0.1
  learning_rate: float = 1e-3
  batch_size: int = 64
  epochs: int = 5
  list_size: Optional[int] = None
  seed: int = 42
  steps_per_epoch: Optional[int] = None

  def validate(self, num_tasks: int) -> None:
    if self.loss not in LOSSES:
      raise ValueError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
    if self.task_weights is not None:
      if len(self.task_weights) != num_tasks:
        raise ValueError(
            f"--task_weights has {len(self.task_weights)} values but the feature spec has "
            f"{num_tasks} tasks; give one weight per task in funnel order")
      if any(w < 0 for w in self.task_weights):
        raise ValueError(f"--task_weights must be >= 0, got {list(self.task_weights)}")
    for name in ("dpr_weight", "pointwise_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
    if self.learning_rate <= 0:
      raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
    if self.batch_size <= 0 or self.epochs <= 0:
      raise ValueError(
          f"--batch_size and --epochs must be positive, got {self.batch_size} and {self.epochs}")
    if self.list_size is not None and self.list_size <= 0:
      raise ValueError(f"--list_size must be positive, got {self.list_size}")


def to_json(model_config: ModelConfig, train_config: TrainConfig, **extra) -> str:
  """Return the resolved configuration as JSON, written next to the checkpoints."""
  return json.dumps({"model": dataclasses.asdict(model_config),
                     "train": dataclasses.asdict(train_config), **extra}, indent=2, sort_keys=True)
