"""Recurrent models that follow vlrnn's ``model(x, state) -> (y, state)`` contract."""
