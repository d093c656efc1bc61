"""Multi-task model bodies. Each module maps the (optionally region-masked) item input to
per-task logits; `seqmd_tf.model.build_scorer` adds the feature encoder, the MD region mask in
front and the serving score, so every body gets the same input, mask and outputs."""
