"""Checking engine: probes, their named diagnoses and the target guard."""
