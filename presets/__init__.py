"""Preset data."""
