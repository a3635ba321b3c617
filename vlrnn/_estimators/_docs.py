"""The parameter text the four estimators' docstrings share (numpydoc style)."""

_PARAMETERS = """
    Parameters
    ----------
    cell, hidden_size, num_layers : optional
        The recurrent model: ``"lstm"``, ``"gru"``, ``"rnn"`` or an ``nn.Module`` cell
        class; units per layer; layers.
    block_len : int, optional
        Time steps per block of the exact-BPTT engine (memory is one block, whatever the
        series' lengths).
    batch_size : int, optional
        Series per batch (series of similar lengths are batched together).
    epochs : int, optional
        Training epochs; ``None``: pack_and_train's automatic choice (with early stopping
        on the validation series).
    lr : float, optional
        Adam learning rate.
    val_fraction : float, optional
        Share of the training series held out for early stopping (``0``: none).
    scale : optional
        ``pack_and_train``'s ``scale``: standardise inputs (and regression targets) with
        the training series' statistics; pass ``False`` for none.
{pool}{class_weight}    clip_grad_norm, early_stopping_patience, device, progress : optional
        Options of ``vlrnn.Trainer`` (``progress=False`` hides the progress bar).
    train_options : dict, optional
        Any further keyword options of ``vlrnn.pack_and_train`` (``schedule``,
        ``memory_budget``, ``checkpoint_dir``, ...).
    random_state : int, numpy RandomState or Generator, optional
        Seeds the validation split, the initial weights, shuffling and dropout (becomes
        ``pack_and_train``'s ``seed``); ``None``: pack_and_train's default seed, so two
        fits on the same data agree.

    Every parameter left at ``None`` takes ``vlrnn.pack_and_train``'s default, so an
    estimator trains the same model as ``pack_and_train`` on the same data.
"""

_CLASS_WEIGHT = """    class_weight : optional
        ``"auto"``, ``"balanced"``, a dict ``{class: weight}`` (a class left out weighs
        1), a list of weights in ``classes_`` order, or ``False`` for none.
"""


_POOL = """    pool : tuple of str, optional
        What the head reads: a subset of ``("last", "mean", "max")`` over time.
"""


def parameters(classifier: bool, pool: bool = True) -> str:
    """The "Parameters" section of a classifier's, regressor's (or, ``pool=False``, the
    forecaster's) docstring."""
    return _PARAMETERS.format(class_weight=_CLASS_WEIGHT if classifier else "",
                              pool=_POOL if pool else "")
