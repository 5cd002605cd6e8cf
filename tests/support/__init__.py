"""Test doubles and helpers shared by tests and benchmarks."""
