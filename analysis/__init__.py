"""Evaluation, likelihood analysis and benchmarks for NTM Studio."""
