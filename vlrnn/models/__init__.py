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
from .conv_front import ConvFront, ConvThen  # noqa: E402

__all__ += ["ConvFront", "ConvThen"]
from .ensemble import MeanOfModels  # noqa: E402

__all__ += ["MeanOfModels"]
