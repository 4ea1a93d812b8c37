"""`make bench`: side-by-side benchmarks that write docs/benchmarks.md.

Each section is a module in this package with `TITLE` and `run(ctx) -> Section`. A section's
result is stored under docs/benchmarks/<name>.json, so one section can be re-run alone
(`python -m benchmarks --only serving`) and the page is re-assembled from all stored results.
"""
