"""Converters from raw search logs to TF-Ranking ExampleListWithContext (ELWC) TFRecords.

Each dataset module (`trivago`, `expedia`, `aliexpress`, `synthetic`) maps the rows of one
result list to an ELWC with pure functions that take plain Python or pandas data, and runs as a
CLI (`python -m pipelines.<name> --help`). `pipelines.elwc` contains the shared record building,
time split and sharded output code. See docs/pipelines.md for the output layout.
"""
