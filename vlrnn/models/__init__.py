"""Recurrent models that follow vlrnn's ``model(x, state) -> (y, state)`` contract."""
from .stacked import StackedRNN

__all__ = ["StackedRNN"]
from .head import WithHead  # noqa: E402

__all__ += ["WithHead"]
from .qrnn import QRNN  # noqa: E402
from .scan import linear_scan  # noqa: E402

__all__ += ["QRNN", "linear_scan"]
from .pooled import POOLS, SequenceModel  # noqa: E402

__all__ += ["POOLS", "SequenceModel"]
from .split_cell import SplitCell, is_split_cell  # noqa: E402

__all__ += ["SplitCell", "is_split_cell"]
from .min_rnn import MinGRU, MinLSTM  # noqa: E402

__all__ += ["MinGRU", "MinLSTM"]
from .lru import LRU  # noqa: E402

__all__ += ["LRU"]
from .mamba import Mamba  # noqa: E402

__all__ += ["Mamba"]
from .registry import MODELS, build_named_model  # noqa: E402

__all__ += ["MODELS", "build_named_model"]

