"""Datasets the project generates or reads."""
