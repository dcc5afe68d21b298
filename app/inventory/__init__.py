"""Stores, terminals and their bulk import."""
