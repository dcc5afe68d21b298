"""Monitors, their results, state changes and rollups."""
