"""Keras callbacks for training: learning rate, region-mask heatmap and progress logs."""

import io
import time

import numpy as np
import tensorflow as tf
from absl import logging

from seqmd_tf import model as model_lib


class LearningRateLogger(tf.keras.callbacks.Callback):
  """Write the optimizer's learning rate to TensorBoard once per epoch (tag `learning_rate`)."""

  def __init__(self, log_dir: str):
    super().__init__()
    self._writer = tf.summary.create_file_writer(log_dir)

  def on_epoch_end(self, epoch, logs=None):
    learning_rate = self.model.optimizer.learning_rate
    if callable(learning_rate):
      learning_rate = learning_rate(self.model.optimizer.iterations)
    with self._writer.as_default():
      tf.summary.scalar("learning_rate", float(tf.keras.backend.get_value(learning_rate)),
                        step=epoch)
    self._writer.flush()


def region_mask_matrix(scorer: tf.keras.Model):
  """Return (mask [num_regions, num_driven_features], region names, feature names) or None.

  Rows are the region vocabulary followed by one out-of-vocabulary row; an element-granularity
  mask is averaged over each feature's embedding dimensions.
  """
  mask_layer = model_lib.region_mask_layer(scorer)
  if mask_layer is None:
    return None
  encoder = model_lib.feature_encoder(scorer)
  region = encoder.spec.region
  oov_value = "" if region.dtype == "string" else -1
  values = list(region.vocabulary) + [oov_value]
  region_repr = encoder.region_values_representation(values)
  mask = mask_layer.mask_values(region_repr).numpy()

  per_feature, start = [], 0
  for width in encoder.driven_dims:
    per_feature.append(mask[:, start:start + width].mean(axis=1))
    start += width
  names = [str(v) for v in region.vocabulary] + ["<oov>"]
  return np.stack(per_feature, axis=1), names, encoder.driven_feature_names


def heatmap_png(matrix: np.ndarray, row_names, column_names, title: str) -> bytes:
  """Render a regions x features heatmap as PNG bytes (matplotlib, no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  height = max(3.0, 0.18 * len(row_names) + 1.5)
  width = max(4.0, 0.35 * len(column_names) + 2.5)
  figure, axes = plt.subplots(figsize=(width, height), dpi=80)
  image = axes.imshow(matrix, aspect="auto", cmap="coolwarm", vmin=0.0, vmax=2.0)
  axes.set_xticks(range(len(column_names)), column_names, rotation=90, fontsize=7)
  axes.set_yticks(range(len(row_names)), row_names, fontsize=6)
  axes.set_title(title, fontsize=9)
  figure.colorbar(image, ax=axes, fraction=0.04)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  plt.close(figure)
  return buffer.getvalue()


class RegionMaskImage(tf.keras.callbacks.Callback):
  """Write the learned mask per region to TensorBoard as an image (tag `region_mask`)."""

  def __init__(self, scorer: tf.keras.Model, log_dir: str):
    super().__init__()
    self._scorer = scorer
    self._writer = tf.summary.create_file_writer(log_dir)

  def on_epoch_end(self, epoch, logs=None):
    result = region_mask_matrix(self._scorer)
    if result is None:
      return
    matrix, regions, features = result
    png = heatmap_png(matrix, regions, features, f"region mask, epoch {epoch + 1} (1.0 = unchanged)")
    image = tf.image.decode_png(png, channels=4)[tf.newaxis]
    with self._writer.as_default():
      tf.summary.image("region_mask", image, step=epoch)
      tf.summary.histogram("region_mask_values", matrix, step=epoch)
    self._writer.flush()


class ProgressLogger(tf.keras.callbacks.Callback):
  """Log one line per epoch with the elapsed time and the logged metrics."""

  def __init__(self, epochs: int):
    super().__init__()
    self._epochs = epochs
    self._start = time.time()

  def on_epoch_end(self, epoch, logs=None):
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items())
                      if k == "loss" or k.startswith("ndcg") or k.startswith("val_ndcg")
                      or k == "val_loss" or k == "dpr")
    logging.info("epoch %d/%d done, %.0f s since training started: %s", epoch + 1,
                 self._epochs, time.time() - self._start, shown)
