"""Task-independent Keras layers of SEQ+MD."""

from seqmd_tf.layers.region_mask import RegionMask
from seqmd_tf.layers.seq_chain import SeqTaskChain
from seqmd_tf.layers.shared_encoder import SharedEncoder

__all__ = ["RegionMask", "SeqTaskChain", "SharedEncoder"]
