"""Benchmarks and torture runs for taos-persona: ``make bench``, ``make torture``.

Not unit tests: they measure what the crash-safety guarantee costs, and
hammer it, against the loopback sandbox and the local disk.
"""
