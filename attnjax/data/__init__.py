"""Data: TFDS builders (array_record) and Grain pipelines.

Importing this package registers the built-in datasets (``digits``; the Long Range
Arena tasks ``listops``, ``listops_small``, ``pathfinder32``, ``pathfinder32_small``,
``pathx``, ``pathx_small``;
and, when the user has prepared them, the catalog-backed ``imdb_bytes_1k``,
``imdb_bytes_4k`` and ``cifar10_gray``; from the user's LRA AAN files, the two-tower
``aan_bytes_4k`` and ``aan_bytes_1k``; the tokenized text datasets of
``attnjax.data.text``: ``stdlib_docstrings``, ``stdlib_corpus``, ``glue/sst2``,
``glue/mrpc``, ``glue/stsb``, ``imdb_reviews`` and the user's files (``text_files``: labelled
text, or parallel text for translation); the causal LM ``code_lm`` and the seq2seq
``code_summarization`` (the installed standard library's source, ``attnjax.data.stdlib_code``),
``addition`` (``attnjax.data.arithmetic``), and the catalog translation datasets
``wmt14_translate/de-en`` and ``ted_hrlr_translate/pt_to_en`` when prepared).
"""

from __future__ import annotations

# Imported for their registrations (they register their tasks in DATASETS).
from attnjax.data import aan  # pylint: disable=unused-import
from attnjax.data import catalog  # pylint: disable=unused-import
from attnjax.data import listops  # pylint: disable=unused-import
from attnjax.data import packing  # pylint: disable=unused-import
from attnjax.data import pathfinder  # pylint: disable=unused-import
from attnjax.data import text  # pylint: disable=unused-import
from attnjax.data.datasets import DATASETS
from attnjax.data.datasets import DatasetInfo
from attnjax.data.datasets import DatasetSpec
from attnjax.data.datasets import Feature
from attnjax.data.datasets import FlatMapSource
from attnjax.data.datasets import ToModelInputs
from attnjax.data.datasets import dataset_tokenizer
from attnjax.data.datasets import dataset_tokenizer_file
from attnjax.data.datasets import get_dataset_spec
from attnjax.data.datasets import list_datasets
from attnjax.data.datasets import prepare_builder
from attnjax.data.datasets import resolve_data_config
from attnjax.data.datasets import resolve_data_dir
from attnjax.data.pipeline import get_dataset_info
from attnjax.data.pipeline import make_eval_iterator
from attnjax.data.pipeline import make_train_iterator
from attnjax.data.pipeline import num_eval_batches
from attnjax.data.pipeline import restore_train_position
from attnjax.data.text import TextDatasetInfo

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "Feature",
    "FlatMapSource",
    "TextDatasetInfo",
    "ToModelInputs",
    "dataset_tokenizer",
    "dataset_tokenizer_file",
    "get_dataset_info",
    "get_dataset_spec",
    "list_datasets",
    "make_eval_iterator",
    "make_train_iterator",
    "num_eval_batches",
    "prepare_builder",
    "resolve_data_config",
    "resolve_data_dir",
    "restore_train_position",
]
