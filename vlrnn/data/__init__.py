"""Ragged pandas frames in, PackedSequence batches out."""
