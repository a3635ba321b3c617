"""Ragged pandas frames in, PackedSequence batches out."""
from .batching import LengthBucketSampler, collate_packed, collate_series, make_loader
from .dataset import SeriesDataset
from .frame import DataWarning, from_dataframe
from .scaling import StandardScaler
from .split import split_series, split_time

__all__ = [
    "DataWarning",
    "LengthBucketSampler",
    "SeriesDataset",
    "StandardScaler",
    "collate_packed",
    "collate_series",
    "from_dataframe",
    "make_loader",
    "split_series",
    "split_time",
]
