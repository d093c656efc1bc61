"""Constructor argument checks shared by the expert, gate, tower and transfer layers.

Every error names the layer and the argument, states the rule and shows the received value.
"""

import numbers
from collections.abc import Sequence


def check_int(layer: str, argument: str, value, minimum: int) -> int:
  """Return `value` as an int, raising ValueError unless it is an int >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{layer}: {argument} must be an int >= {minimum}, received {value!r}.")
  return int(value)


def check_units(layer: str, argument: str, values: Sequence[int], allow_empty: bool) -> tuple:
  """Return `values` as a tuple of ints, raising ValueError unless each one is > 0."""
  if isinstance(values, (numbers.Number, str)):
    raise ValueError(
      f"{layer}: {argument} must be a list of ints, received {values!r}. "
      f"Write [{values!r}] for a single layer."
    )
  values = tuple(values)
  if not values and not allow_empty:
    raise ValueError(f"{layer}: {argument} must list at least one width, received {values!r}.")
  for value in values:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
      raise ValueError(
        f"{layer}: every entry of {argument} must be an int > 0, received {values!r}."
      )
  return tuple(int(value) for value in values)


def check_dropout(layer: str, value: float) -> float:
  """Return `value` as a float, raising ValueError unless it is in [0, 1)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
    raise ValueError(f"{layer}: dropout must be in [0, 1), received {value!r}.")
  return float(value)
