"""Benchmark scripts: they print JSON numbers and never fail a build on timing."""
