"""Benchmarks: ``streamrec bench NAME`` runs ``benchmarks/NAME.py`` from this checkout (not installed with the
packages). Each prints its figures and exits 1 when it misses its goal; speed goals live here, not in tests."""
