"""Recurrent models that follow vlrnn's ``model(x, state) -> (y, state)`` contract."""
from ._conv_front import ConvFront, ConvThen
from ._ensemble import MeanOfModels
from ._head import WithHead
from ._lru import LRU
from ._mamba import Mamba
from ._min_rnn import MinGRU, MinLSTM
from ._pooled import POOLS, SequenceModel
from ._qrnn import QRNN
from ._registry import MODELS, build_named_model
from ._scan import linear_scan
from ._split_cell import SplitCell, is_split_cell
from ._stacked import StackedRNN

__all__ = ["LRU", "MODELS", "POOLS", "ConvFront", "ConvThen", "Mamba", "MeanOfModels",
           "MinGRU", "MinLSTM", "QRNN", "SequenceModel", "SplitCell", "StackedRNN",
           "WithHead", "build_named_model", "is_split_cell", "linear_scan"]
