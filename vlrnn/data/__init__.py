"""Ragged pandas frames in, PackedSequence batches out."""
from .arrays import ArrayFrame, from_arrays
from .batching import LengthBucketSampler, collate_packed, collate_series, make_loader
from .dataset import SeriesDataset
from .frame import from_dataframe
from .scaling import StandardScaler
from .split import split_series, split_time
from .tsfile import read_ts
from .validate import DataWarning

__all__ = [
    "ArrayFrame",
    "DataWarning",
    "LengthBucketSampler",
    "SeriesDataset",
    "StandardScaler",
    "collate_packed",
    "collate_series",
    "from_arrays",
    "from_dataframe",
    "make_loader",
    "read_ts",
    "split_series",
    "split_time",
]
