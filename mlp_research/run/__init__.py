"""The framework-neutral run: driver, metrics rows and writers, summary, checkpoints, signals, the workdir.

Nothing here imports JAX at module level or compares a backend's name: what differs per framework is a
method of the backend the entry point hands to the driver.
"""
