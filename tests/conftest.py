"""Shared pytest set-up: make tests/ importable and keep TensorFlow's logs short."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
