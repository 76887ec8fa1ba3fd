"""Experiments: run strategies and policies over scenarios and seeds, store tidy results, plot.

Submodules are imported on use (``marra.experiments.simulate``, ``.plots``, ``.results``,
``.reproduce``), so importing this package stays cheap.
"""
