"""Layer names for per-task layers, unique within a model and valid as Keras names."""

import re


def task_layer_name(prefix: str, step: int, task: str) -> str:
  """Return `<prefix>_<step>_<task>`, e.g. "tower_1_purchase".

  Characters that Keras does not allow in a layer name become "_". The funnel step keeps the
  names unique even when two task names then become equal.
  """
  return f"{prefix}_{step}_{re.sub(r'[^A-Za-z0-9_.-]', '_', task)}"
