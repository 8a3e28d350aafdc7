"""Benchmarks that print figures (see bench/README.md); they assert nothing.

Run each as a module from the repository root, so that it imports the test support
(``tests.support``) and its sibling programs as packages: ``.venv/bin/python -m bench.reaction``.
The programs they start as separate clients (``victims.py``, ``reference_reactor.py``) are
plain scripts run by path; ``shorts.py`` is run as ``-m bench.shorts``.
"""
