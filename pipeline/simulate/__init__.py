"""The fleet simulator: dashcam drives on a road graph, their traces in every format, the truth.

A tool beside the stages, for demos, tests and benchmarks (``roadcover simulate``). It reads a
roads folder and uses snap's graph kernels; ingest never imports it.
"""
