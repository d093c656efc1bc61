"""Read serialized ELWC lists from TFRecord files, for warmup requests and the client."""

from typing import List, Optional

import tensorflow as tf

from seqmd_tf.data import list_files


def read_serialized_lists(file_pattern: str, max_lists: Optional[int] = None,
                          flag_name: str = "--files") -> List[bytes]:
  """Return up to `max_lists` records of the files matched by `file_pattern`, in file order.

  Args:
    file_pattern: comma-separated globs of ELWC TFRecord files.
    max_lists: number of records to read; None reads every record.
    flag_name: the command-line flag that gave `file_pattern`, named in errors.

  Raises:
    seqmd_tf.data.InputFilesError: the pattern matched no file.
    ValueError: the files hold no record.
  """
  dataset = tf.data.TFRecordDataset(list_files(file_pattern, flag_name))
  if max_lists is not None:
    dataset = dataset.take(max_lists)
  records = [record.numpy() for record in dataset]
  if not records:
    raise ValueError(f"{flag_name}={file_pattern!r} matched files that hold no record; pass "
                     "ELWC TFRecord files written by python -m pipelines.<dataset>")
  return records
