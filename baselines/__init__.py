"""Baseline user representations: the alternatives z_u is measured against.

Each is a (users, items) matrix in, user vectors out, so `userrep evaluate` (evaluation/) and
`userrep downstream compare` (downstream/) fit the very same model. They sit beside
`representation` and never import it.
"""
