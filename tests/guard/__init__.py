"""The guard's contract suite, run against every scope (see conftest.py)."""
