"""Benchmarks: quality (``quality``), run-to-run consistency (``consistency``), speed (``speed``) and visual
comparison sheets (``compare_sheet``). Each is a module with a ``main(argv)`` that prints one table and writes
CSV + JSON under ``--out``; the shared pieces (methods, datasets, metrics, reporting) are in ``common``, and the
network configurations (official, small, tiny) in ``presets``.
"""
