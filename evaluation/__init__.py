"""Representation quality: the fixed protocol that scores z_u beside baselines (DESIGN.md,
"Representation quality: the bar"), in-process, from the platform's own feature code.
"""
