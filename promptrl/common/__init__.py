"""Helpers every layer may use: atomic files and checkpoints, Hub save and load."""
