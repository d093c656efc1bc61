"""Package metadata. The pinned environment is requirements.txt (see BUILD.md)."""

import setuptools

setuptools.setup(
    name="seqmd_tf",
    version="0.1.0",
    description="SEQ+MD multi-task, multi-region listwise re-ranker for TensorFlow and TF-Ranking",
    packages=setuptools.find_packages(include=["seqmd_tf*", "pipelines*", "export*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        "tensorflow==2.15.1",
        "tensorflow-ranking==0.5.5",
        "tensorflow-recommenders==0.7.7",
        "tensorflow-io==0.36.0",
        "tensorflow-serving-api==2.15.1",
        "numpy==1.26.4",
        "protobuf==4.25.9",
        "absl-py",
        "pandas",
        "pyarrow",
    ],
    license="Apache-2.0",
)
