"""Experiments over many runs: finding them, their statistics, and the report."""
