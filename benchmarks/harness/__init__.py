"""The side-by-side benchmark harness: namespaces on the shared servers, worker processes,
the workloads, the raw limits and the report. ``benchmarks/run.py`` is its command line."""
