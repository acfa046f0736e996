"""Data sets: the spirals generator and the MNIST loader."""
