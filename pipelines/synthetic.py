"""Generate synthetic multi-region lists with a known click -> add_to_cart -> purchase funnel.

Every list belongs to one of R regions (R00, R01, ...; region sizes fall off like a Zipf law, so
some regions are small) and has `list_size` items in the order a noisy production ranker
showed them. The true probabilities are known and written as float example features
`oracle_click`, `oracle_add_to_cart` and `oracle_purchase`, which no feature spec lists, so an
oracle NDCG can be computed and they never reach a model.

Generative model, per item (sigmoid = logistic function, z = standardized quality):
  P(click)               = examination(original_rank, device) * sigmoid(click logit)
  P(add_to_cart | click) = sigmoid(cart logit)
  P(purchase | cart)     = sigmoid(purchase logit of the list's region)
  examination            = original_rank ** -POSITION_BIAS_EXPONENT[device]
Labels are drawn step by step (a purchase needs an add-to-cart, which needs a click), so they
respect the funnel. Click and cart logits depend on region-invariant features (relevance,
quality) and a shared price effect. The purchase logit depends on the region-driven features
log(price_to_list_median), domestic_seller and shipping_days with per-region coefficients in the
`differ` setting, and with the same coefficients (the mean of the `differ` ranges) in every
region in the `shared` setting. Region-driven features also have region-specific
distributions in both settings (currency of `price`, shipping times, domestic share, device mix).

Determinism: --seed draws the lists and --world_seed draws the region parameters, so runs with
different --seed values sample from one world. Equal flags give byte-identical records.

Usage:
  python -m pipelines.synthetic --output_dir /tmp/synthetic --num_lists 200000 --num_regions 8 \
      --list_size 20 --setting differ --seed 1
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging

from pipelines import elwc

DATASET = "synthetic"
TASKS = ("click", "add_to_cart", "purchase")
ORACLE_FEATURES = {task: f"oracle_{task}" for task in TASKS}
SETTINGS = ("shared", "differ")
MAX_NUM_REGIONS = 20  # size of the region vocabulary in configs/synthetic.json
REGION_NAMES = tuple(f"R{index:02d}" for index in range(MAX_NUM_REGIONS))
DEVICES = ("desktop", "mobile")
REGION_FEATURE = "region"

# Lists generated per numpy batch. Fixed, because the random draws of a batch depend on its size.
CHUNK_LISTS = 4096
REGION_SIZE_EXPONENT = 0.7  # region k gets weight (k + 1) ** -0.7

# Examination probability at rank r is r ** -exponent. It falls faster on mobile, whose screens
# show fewer items.
POSITION_BIAS_EXPONENT = {"desktop": 0.7, "mobile": 1.1}
SHIPPING_REFERENCE_DAYS = 5.0  # the purchase logit uses shipping_days / 5 - 1

# Ranges of the per-region purchase coefficients in the `differ` setting. `shared` uses the mean.
PURCHASE_PRICE_EFFECT_RANGE = (-4.0, 2.0)  # per unit of log(price / list median price)
PURCHASE_DOMESTIC_EFFECT_RANGE = (-2.5, 2.5)  # for a domestic seller
PURCHASE_SHIPPING_EFFECT_RANGE = (-3.0, 1.0)  # per unit of shipping_days / 5 - 1

FEATURE_DTYPES = {
  elwc.LIST_ID_FEATURE: elwc.STRING,
  REGION_FEATURE: elwc.STRING,
  "device": elwc.STRING,
  "relevance": elwc.FLOAT,
  "quality": elwc.FLOAT,
  "original_rank": elwc.INT64,
  "price": elwc.FLOAT,
  "price_to_list_median": elwc.FLOAT,
  "shipping_days": elwc.FLOAT,
  "domestic_seller": elwc.INT64,
  **{task: elwc.INT64 for task in TASKS},
  **{name: elwc.FLOAT for name in ORACLE_FEATURES.values()},
}
EXAMPLE_COLUMNS = (
  (
    "relevance",
    "quality",
    "original_rank",
    "price",
    "price_to_list_median",
    "shipping_days",
    "domestic_seller",
  )
  + TASKS
  + tuple(ORACLE_FEATURES.values())
)


@dataclasses.dataclass(frozen=True)
class World:
  """Region-level parameters. Each array has shape [num_regions]."""

  setting: str
  region_weights: np.ndarray  # share of lists per region, sums to 1
  currency_rate: np.ndarray  # local price units per reference unit
  shipping_mean_days: np.ndarray
  domestic_share: np.ndarray  # probability that an item's seller is domestic
  mobile_share: np.ndarray  # probability that a list is viewed on mobile
  purchase_price_effect: np.ndarray
  purchase_domestic_effect: np.ndarray
  purchase_shipping_effect: np.ndarray

  @property
  def num_regions(self) -> int:
    return len(self.region_weights)

  def to_dict(self) -> dict:
    """Return {region name: {parameter: value}} for stats.json."""
    result = {}
    for index in range(self.num_regions):
      result[REGION_NAMES[index]] = {
        field.name: round(float(getattr(self, field.name)[index]), 6)
        for field in dataclasses.fields(self)
        if field.name != "setting"
      }
    return result


def make_world(num_regions: int, setting: str, world_seed: int) -> World:
  """Draw the region parameters of a world with `num_regions` regions."""
  if not 1 <= num_regions <= MAX_NUM_REGIONS:
    raise ValueError(
      f"num_regions must be in [1, {MAX_NUM_REGIONS}] (the region vocabulary of "
      f"configs/synthetic.json); received {num_regions}."
    )
  if setting not in SETTINGS:
    raise ValueError(f"setting must be one of {SETTINGS}; received {setting!r}.")
  rng = np.random.default_rng([world_seed, 0])
  weights = (np.arange(num_regions) + 1.0) ** -REGION_SIZE_EXPONENT

  def spread(value_range):
    # Evenly spaced over the range in a random region order, so every world has regions with
    # strongly opposite effects. `shared` puts the range's mean in every region.
    if setting == "shared":
      return np.full(num_regions, np.mean(value_range))
    return rng.permutation(np.linspace(value_range[0], value_range[1], num_regions))

  return World(
    setting=setting,
    region_weights=weights / weights.sum(),
    currency_rate=np.exp(rng.uniform(np.log(0.5), np.log(50.0), num_regions)),
    shipping_mean_days=rng.uniform(2.0, 10.0, num_regions),
    domestic_share=rng.uniform(0.2, 0.8, num_regions),
    mobile_share=rng.uniform(0.3, 0.8, num_regions),
    purchase_price_effect=spread(PURCHASE_PRICE_EFFECT_RANGE),
    purchase_domestic_effect=spread(PURCHASE_DOMESTIC_EFFECT_RANGE),
    purchase_shipping_effect=spread(PURCHASE_SHIPPING_EFFECT_RANGE),
  )


def _sigmoid(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-logits))


def purchase_probability(
  world: World,
  region: np.ndarray,
  quality_z: np.ndarray,
  log_price_ratio: np.ndarray,
  domestic_seller: np.ndarray,
  shipping_days: np.ndarray,
) -> np.ndarray:
  """Return P(purchase | add_to_cart).

  Args:
    region: int array [num_lists], region index of each list.
    quality_z, log_price_ratio, shipping_days: float arrays [num_lists, list_size].
    domestic_seller: 0/1 array [num_lists, list_size].

  Returns:
    float64 array [num_lists, list_size].
  """
  region = region[:, None]
  logits = (
    -1.5
    + 0.4 * quality_z
    + world.purchase_price_effect[region] * log_price_ratio
    + world.purchase_domestic_effect[region] * domestic_seller
    + world.purchase_shipping_effect[region] * (shipping_days / SHIPPING_REFERENCE_DAYS - 1.0)
  )
  return _sigmoid(logits)


def generate_lists(world: World, num_lists: int, list_size: int, rng: np.random.Generator) -> dict:
  """Draw `num_lists` lists of `list_size` items, each list in its shown order.

  Returns:
    {"region": int [num_lists], "device": int [num_lists] (index into DEVICES)} plus one
    array of shape [num_lists, list_size] per name in EXAMPLE_COLUMNS (labels int64 0/1,
    original_rank int64 1..list_size).
  """
  shape = (num_lists, list_size)
  region = rng.choice(world.num_regions, size=num_lists, p=world.region_weights)
  device = (rng.random(num_lists) < world.mobile_share[region]).astype(np.int64)

  relevance = rng.standard_normal(shape)
  quality = np.clip(rng.normal(3.8, 0.6, shape), 1.0, 5.0)  # a 1-5 star rating
  quality_z = (quality - 3.8) / 0.6
  base_price = np.exp(rng.normal(np.log(50.0), 0.5, shape) + 0.3 * quality_z)
  domestic_seller = (rng.random(shape) < world.domestic_share[region][:, None]).astype(np.int64)
  shipping_scale = (
    np.where(domestic_seller == 1, 0.5, 1.3) * world.shipping_mean_days[region][:, None]
  )
  shipping_days = shipping_scale * np.exp(rng.normal(0.0, 0.3, shape))

  # A production ranker scores relevance and quality plus noise, and the list shows its order.
  production_score = 0.8 * relevance + 0.3 * quality_z + rng.normal(0.0, 0.8, shape)
  order = np.argsort(-production_score, axis=1, kind="stable")
  relevance, quality, quality_z, base_price, domestic_seller, shipping_days = (
    np.take_along_axis(values, order, axis=1)
    for values in (relevance, quality, quality_z, base_price, domestic_seller, shipping_days)
  )
  original_rank = np.broadcast_to(np.arange(1, list_size + 1), shape)

  # The fixed coefficients below give about 11% clicks, 4.6% add-to-carts and 1-2% purchases
  # per item (measured on 50,000 lists of 20 items, 8 regions).
  price_ratio = base_price / np.median(base_price, axis=1, keepdims=True)
  log_price_ratio = np.log(price_ratio)
  exponent = np.where(
    device == 1, POSITION_BIAS_EXPONENT["mobile"], POSITION_BIAS_EXPONENT["desktop"]
  )
  examination = original_rank ** -exponent[:, None]
  p_click = examination * _sigmoid(-0.5 + 1.5 * relevance + 0.3 * quality_z - 0.2 * log_price_ratio)
  p_cart = _sigmoid(-1.0 + 0.8 * quality_z + 0.4 * relevance - 0.5 * log_price_ratio)
  p_purchase = purchase_probability(
    world, region, quality_z, log_price_ratio, domestic_seller, shipping_days
  )

  click = rng.random(shape) < p_click
  add_to_cart = click & (rng.random(shape) < p_cart)
  purchase = add_to_cart & (rng.random(shape) < p_purchase)
  return {
    "region": region,
    "device": device,
    "relevance": relevance,
    "quality": quality,
    "original_rank": original_rank.astype(np.int64),
    "price": base_price * world.currency_rate[region][:, None],
    "price_to_list_median": price_ratio,
    "shipping_days": shipping_days,
    "domestic_seller": domestic_seller,
    "click": click.astype(np.int64),
    "add_to_cart": add_to_cart.astype(np.int64),
    "purchase": purchase.astype(np.int64),
    "oracle_click": p_click,
    "oracle_add_to_cart": p_click * p_cart,
    "oracle_purchase": p_click * p_cart * p_purchase,
  }


def list_id(index: int) -> str:
  return f"synthetic:{index}"


def list_to_record(lists: dict, index: int, list_index: int) -> elwc.ListRecord:
  """Map row `index` of `generate_lists` output to a ListRecord with id list_id(list_index)."""
  region = REGION_NAMES[int(lists["region"][index])]
  context = {
    elwc.LIST_ID_FEATURE: list_id(list_index),
    REGION_FEATURE: region,
    "device": DEVICES[int(lists["device"][index])],
  }
  list_size = lists["click"].shape[1]
  examples = [
    {name: lists[name][index, item] for name in EXAMPLE_COLUMNS} for item in range(list_size)
  ]
  return elwc.ListRecord(
    list_id=context[elwc.LIST_ID_FEATURE], region=region, context=context, examples=examples
  )


def encode_lists(lists: dict, first_list_index: int) -> list:
  """Serialize every list of `generate_lists` output; byte-identical to make_example_list.

  Returns:
    num_lists serialized ELWC records; list i gets id list_id(first_list_index + i).
  """
  num_lists, list_size = lists["click"].shape
  columns = {name: lists[name].reshape(-1) for name in EXAMPLE_COLUMNS}
  entries = elwc.encode_example_entries(columns, FEATURE_DTYPES)
  records = []
  for index in range(num_lists):
    context = elwc.make_example(
      {
        elwc.LIST_ID_FEATURE: list_id(first_list_index + index),
        REGION_FEATURE: REGION_NAMES[int(lists["region"][index])],
        "device": DEVICES[int(lists["device"][index])],
      },
      FEATURE_DTYPES,
    )
    start = index * list_size
    records.append(
      b"".join(entries[start : start + list_size]) + elwc.encode_context_entry(context)
    )
  return records


def num_chunks(num_lists: int) -> int:
  """Return how many chunks of CHUNK_LISTS lists (the last one shorter) hold num_lists lists."""
  return -(-num_lists // CHUNK_LISTS)


def generate_chunk(
  world: World, chunk_index: int, num_lists: int, list_size: int, seed: int
) -> tuple:
  """Draw and serialize chunk `chunk_index` of a dataset of `num_lists` lists.

  The chunk holds lists chunk_index * CHUNK_LISTS up to the next chunk's first list (or
  num_lists). Each chunk has its own random generator, seeded by (seed, chunk_index), so chunks
  can be generated in any order or in parallel and still give the same records.

  Returns:
    (records, regions, labels): the serialized ELWCs and the region name of each list, and
    {task: int64 array [chunk_size, list_size]} with the 0/1 labels.
  """
  chunk_start = chunk_index * CHUNK_LISTS
  chunk_size = min(CHUNK_LISTS, num_lists - chunk_start)
  rng = np.random.default_rng([seed, 1, chunk_index])
  lists = generate_lists(world, chunk_size, list_size, rng)
  records = encode_lists(lists, chunk_start)
  regions = [REGION_NAMES[region] for region in lists["region"].tolist()]
  labels = {task: lists[task] for task in TASKS}
  return records, regions, labels


def first_eval_list(num_lists: int, eval_fraction: float) -> int:
  """Return the index of the first eval list: the last round(fraction * n) lists are eval."""
  return num_lists - elwc.num_eval_groups(num_lists, eval_fraction)


def generate(
  output_dir: str,
  num_lists: int,
  num_regions: int,
  list_size: int,
  setting: str,
  seed: int,
  world_seed: int = 0,
  eval_fraction: float = elwc.DEFAULT_EVAL_FRACTION,
  num_shards: int = elwc.DEFAULT_NUM_SHARDS,
  overwrite: bool = False,
  log_every: int = elwc.DEFAULT_LOG_EVERY,
) -> dict:
  """Write a synthetic dataset to output_dir/{train,eval}/*.tfrecord and stats.json.

  The last round(eval_fraction * num_lists) lists go to eval.

  Returns:
    The stats written to output_dir/stats.json.
  """
  elwc.validate_eval_fraction(eval_fraction)
  if num_lists < 0 or list_size < 1:
    raise ValueError(
      f"Need num_lists >= 0 and list_size >= 1; received {num_lists} and {list_size}."
    )
  world = make_world(num_regions, setting, world_seed)
  first_eval = first_eval_list(num_lists, eval_fraction)
  logging.info(
    "%s: %d lists of %d items, %d regions, setting %s, seed %d, world seed %d",
    DATASET,
    num_lists,
    list_size,
    num_regions,
    setting,
    seed,
    world_seed,
  )

  with elwc.DatasetWriter(
    output_dir, TASKS, num_shards, overwrite, log_every, name=DATASET
  ) as writer:
    for chunk_index in range(num_chunks(num_lists)):
      chunk_start = chunk_index * CHUNK_LISTS
      records, regions, labels = generate_chunk(world, chunk_index, num_lists, list_size, seed)
      chunk_size = len(records)
      # Lists before `boundary` in this chunk belong to train, the rest to eval.
      boundary = min(max(first_eval - chunk_start, 0), chunk_size)
      for split, rows in (
        (elwc.TRAIN, slice(0, boundary)),
        (elwc.EVAL, slice(boundary, chunk_size)),
      ):
        writer.write_batch(
          split,
          records[rows],
          regions[rows],
          {task: values[rows] for task, values in labels.items()},
        )
    return writer.commit(
      {
        "dataset": DATASET,
        "input": None,
        "flags": {
          "num_lists": num_lists,
          "num_regions": num_regions,
          "list_size": list_size,
          "setting": setting,
          "seed": seed,
          "world_seed": world_seed,
          "eval_fraction": eval_fraction,
          "num_shards": num_shards,
        },
        "world": world.to_dict(),
      }
    )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  generate(
    FLAGS.output_dir,
    FLAGS.num_lists,
    FLAGS.num_regions,
    FLAGS.list_size,
    FLAGS.setting,
    FLAGS.seed,
    FLAGS.world_seed,
    FLAGS.eval_fraction,
    FLAGS.num_shards,
    FLAGS.overwrite,
    FLAGS.log_every,
  )


def define_generator_flags() -> None:
  """Define --num_lists, --num_regions, --list_size, --setting, --seed and --world_seed."""
  flags.DEFINE_integer(
    "num_lists", 10000, "Lists to generate (train and eval together).", lower_bound=0
  )
  flags.DEFINE_integer(
    "num_regions",
    5,
    f"Regions R00, R01, ... (at most {MAX_NUM_REGIONS}).",
    lower_bound=1,
    upper_bound=MAX_NUM_REGIONS,
  )
  flags.DEFINE_integer("list_size", 20, "Items per list.", lower_bound=1)
  flags.DEFINE_enum(
    "setting",
    "differ",
    SETTINGS,
    "differ: region-driven features affect purchase differently per region; shared: the same everywhere.",
  )
  flags.DEFINE_integer("seed", 0, "Seed of the list draws.")
  flags.DEFINE_integer(
    "world_seed", 0, "Seed of the region parameters (currency, shipping, purchase effects)."
  )


if __name__ == "__main__":
  define_generator_flags()
  elwc.define_output_flags()
  # The flags are defined in pipelines.elwc; adopting them lists them under --help.
  flags.adopt_module_key_flags(elwc)
  app.run(main)
