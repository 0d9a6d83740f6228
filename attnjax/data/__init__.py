"""Data: TFDS builders (array_record) and Grain pipelines.

Importing this package registers the built-in datasets (``digits``).
"""

from __future__ import annotations

from attnjax.data.datasets import DATASETS
from attnjax.data.datasets import DatasetInfo
from attnjax.data.datasets import DatasetSpec
from attnjax.data.datasets import ToModelInputs
from attnjax.data.datasets import get_dataset_spec
from attnjax.data.datasets import list_datasets
from attnjax.data.datasets import prepare_builder
from attnjax.data.datasets import resolve_data_dir
from attnjax.data.pipeline import get_dataset_info
from attnjax.data.pipeline import make_eval_iterator
from attnjax.data.pipeline import make_train_iterator
from attnjax.data.pipeline import num_eval_batches

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "ToModelInputs",
    "get_dataset_info",
    "get_dataset_spec",
    "list_datasets",
    "make_eval_iterator",
    "make_train_iterator",
    "num_eval_batches",
    "prepare_builder",
    "resolve_data_dir",
]
