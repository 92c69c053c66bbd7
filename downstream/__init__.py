"""Downstream transfer: point-in-time training sets from Feast and GBDT task models on z_u."""
