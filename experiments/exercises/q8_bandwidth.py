"""Q8: memory bandwidth by measurement (streaming copy and triad) and the bus width it implies.

Command: python -m experiments.report --only=q8 [--smoke]
Measures: GB/s of copy and triad over arrays far larger than the caches, with JAX (default
device) and numpy (host), stored per device label in q8_bandwidth/results.json.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        num_floats=64 * 2**20,
        reps=10,
        smoke=dict(num_floats=16 * 2**20, reps=3),
    ))
