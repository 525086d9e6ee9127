"""Q7: matmul speed at aligned and misaligned sizes (1024-1032, 2048/2049, 4096/4097).

Command: python -m experiments.report --only=q7 [--smoke]
Measures: GFLOP/s of float32 square matmuls with JAX (default device) and numpy (host),
stored per device label in q7_matmul/results.json so CPU and GPU columns sit side by side.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        sizes=[1024, 1025, 1026, 1028, 1032, 2048, 2049, 4096, 4097],
        reps=5,
        numpy=True,
        smoke=dict(sizes=[256, 257, 1024, 1025], reps=2),
    ))
