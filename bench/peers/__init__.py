"""Peers of the benchmarks: other engines run side by side on the same inputs (see README.md here)."""
