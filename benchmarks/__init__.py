"""Side-by-side measurements. Each writes its own section of docs/benchmarks.md."""
