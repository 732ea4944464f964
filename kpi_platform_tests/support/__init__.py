"""Helpers the tests share (databases, platforms, sinks, code locations for subprocesses).

Test modules and conftests import from here, never from each other. Importing this package imports nothing else:
`forkserver_probe` relies on it.
"""
