"""Recurrent models that follow vlrnn's ``model(x, state) -> (y, state)`` contract."""
from .conv_front import ConvFront, ConvThen
from .ensemble import MeanOfModels
from .head import WithHead
from .lru import LRU
from .mamba import Mamba
from .min_rnn import MinGRU, MinLSTM
from .pooled import POOLS, SequenceModel
from .qrnn import QRNN
from .registry import MODELS, build_named_model
from .scan import linear_scan
from .split_cell import SplitCell, is_split_cell
from .stacked import StackedRNN

__all__ = ["LRU", "MODELS", "POOLS", "ConvFront", "ConvThen", "Mamba", "MeanOfModels",
           "MinGRU", "MinLSTM", "QRNN", "SequenceModel", "SplitCell", "StackedRNN",
           "WithHead", "build_named_model", "is_split_cell", "linear_scan"]
