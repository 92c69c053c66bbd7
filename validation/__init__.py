"""Validation: Great Expectations data-quality and drift gates between the pipeline's stages.

Quality suites (suites.py) and drift suites (drift.py) run through runner.py, the one GX import.
"""
