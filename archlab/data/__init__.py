"""Data sets: records, splits and batches; images, tables, text, tokenizers, npy files and streaming."""

# Importing these modules registers their entries.
from . import _images, _multimodal, _ondisk, _tables, _text  # noqa: F401
from ._dataset import (
    DATASETS,
    Augment,
    DataInfo,
    Dataset,
    Split,
    iterate_batches,
    num_batches,
)
from ._inputs import INPUT_KINDS, NewSamples, input_preprocessing, read_inputs
from ._load import load_dataset
from ._ondisk import (
    DiskSplit,
    describe_data_path,
    format_size,
    memory_budget,
    parse_size,
    serve,
    stream_batches,
    write_npy,
)
from ._tokenizers import (
    BPETokenizer,
    CharTokenizer,
    SymbolTokenizer,
    WordTokenizer,
    pad_sequences,
    tokenizer_from_dict,
    words,
)

__all__ = [
    "Augment",
    "BPETokenizer",
    "CharTokenizer",
    "DATASETS",
    "DataInfo",
    "Dataset",
    "DiskSplit",
    "INPUT_KINDS",
    "NewSamples",
    "Split",
    "SymbolTokenizer",
    "WordTokenizer",
    "describe_data_path",
    "format_size",
    "input_preprocessing",
    "iterate_batches",
    "load_dataset",
    "memory_budget",
    "num_batches",
    "pad_sequences",
    "read_inputs",
    "parse_size",
    "serve",
    "stream_batches",
    "tokenizer_from_dict",
    "words",
    "write_npy",
]
