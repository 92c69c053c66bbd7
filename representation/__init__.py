"""Representation: modality encoders, multi-horizon user features, the autoencoder and z_u batches."""
