"""Data sources: the synthetic music-streaming simulator and built-in dataset loaders."""
