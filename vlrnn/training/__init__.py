"""The pieces behind :class:`vlrnn.Trainer` and :func:`vlrnn.pack_and_train`.

``helpers`` (seeding, devices, batches, out-of-memory messages), ``checkpointing``
(the Trainer's checkpoints and exact resume), ``losses`` (per-row losses that leave
missing targets out), ``metrics`` (accuracy, MAE, RMSE and baselines), ``tasks``
(task inference, class codes, labels per series, time steps), ``frames`` (a frame
to the dataset of a task) and ``tensorboard`` (the scalars of ``Trainer(log_dir=...)``).
"""
