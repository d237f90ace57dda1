"""Benchmarks behind `prosemc bench`: results as JSON + Markdown (+ plots) under docs/bench/."""
