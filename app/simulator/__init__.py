"""Simulated terminals, endpoints and DNS on loopback, for tests, the demo and benchmarks."""
