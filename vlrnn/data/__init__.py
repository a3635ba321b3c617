"""Ragged pandas frames in, PackedSequence batches out."""
from ._arrays import ArrayFrame, from_arrays
from ._batching import LengthBucketSampler, collate_packed, collate_series, make_loader
from ._dataset import SeriesDataset
from ._frame import from_dataframe
from ._scaling import StandardScaler
from ._split import split_series, split_time
from ._tsfile import read_ts
from ._validate import DataWarning

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
