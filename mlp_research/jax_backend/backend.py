"""`JaxBackend`: the core, registered under the entry-point group `mlp_research.backends` like any plugin.

It trains every option of the spec: all optimisers, every placement (`none`,
`pmap`, `sharded`, across processes), reduced matmul precision and vmapped
groups. What is JAX's alone (XLA flags, the compilation cache, the
multi-process runtime) happens here, called by the framework-neutral driver
through the backend's optional methods.
"""

from __future__ import annotations

import os
from typing import Sequence

from mlp_research import config as config_lib
from mlp_research import hardware
from mlp_research.backends.base import Backend
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import ConfigError, warn
from mlp_research.optimizers import SUPPORTED


class JaxBackend(Backend):
    name = "jax"
    optimizers = SUPPORTED
    parallel_modes = config_lib.PARALLEL_MODES
    matmul_precisions = config_lib.MATMUL_PRECISIONS
    trains_groups = True

    def version(self) -> str:
        import jax

        return jax.__version__

    def prepare(self, config: Config) -> None:
        """Before JAX starts its backends: XLA:CPU flags and the persistent compilation cache."""
        tune_xla_cpu()
        use_compilation_cache(config.resolved_compilation_cache_dir())

    def check(self, config: Config) -> None:
        """The device split of the batch (and multi-process constraints) are checked here."""
        from mlp_research.jax_backend import placement

        placement.check_placement(config)

    def trainer(self, config: Config, splits: Splits):
        from mlp_research.jax_backend import placement
        from mlp_research.jax_backend.trainer import JaxTrainer

        trainer = JaxTrainer(config, splits, placement.make_placement(config))
        note_bfloat16_speed(config, trainer.describe()["platform"])
        return trainer

    def group_trainer(self, configs: Sequence[Config], splits: Splits):
        """A vmapped group on one device (see `group.py`)."""
        from mlp_research.jax_backend.group import JaxGroupTrainer

        base = configs[0]
        if base.parallel not in ("auto", "none"):
            raise ConfigError(f"--parallel: a vmapped group trains on one device; {base.parallel!r} is not "
                              "available with --vmap (use auto or none)")
        if self.process_count() > 1:
            raise ConfigError("--vmap: a vmapped group trains in one process; launch it without other processes")
        trainer = JaxGroupTrainer(configs, splits)
        note_bfloat16_speed(base, trainer.describe()["platform"])
        return trainer

    def join_processes(self, launch):
        """Join the multi-process runtime the launch describes, before anything touches a device.

        Returns the launch completed with what the runtime reports (count, index, coordinator).
        """
        from mlp_research.jax_backend import distributed

        return distributed.join(launch)

    def guard(self):
        """Around a joined process's work: a lost peer ends it with one line (exit 12), never a hang."""
        from mlp_research.jax_backend import distributed

        return distributed.guard()

    def process_index(self) -> int:
        import jax

        return jax.process_index()

    def process_count(self) -> int:
        import jax

        return jax.process_count()

    def agree(self, stop: bool, save_due: bool) -> tuple[bool, bool]:
        from mlp_research.jax_backend import distributed

        return distributed.agree(stop, save_due)


def note_bfloat16_speed(config: Config, platform: str) -> None:
    """Say so when bfloat16 matmuls will run slower than float32: on a CPU without a bfloat16 unit."""
    if config.matmul_precision == "bfloat16" and platform == "cpu" and not hardware.has_fast_bfloat16():
        warn("--matmul_precision: this CPU has no bfloat16 matrix unit (AMX-BF16 or AVX512-BF16), so bfloat16 "
             "matmuls are emulated and run slower than float32; the results are bfloat16's all the same")


# XLA:CPU's concurrency-optimised scheduler orders the step's ops so that independent ones can run
# side by side; here the matmuls already use every core, and that order made an epoch 5-6% slower
# (0.359 -> 0.340 s on a 2-core EPYC, bit-identical results). GPUs ignore CPU flags.
CPU_XLA_FLAGS = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def tune_xla_cpu() -> None:
    """Add `CPU_XLA_FLAGS` to $XLA_FLAGS, leaving any the user set alone.

    XLA reads the variable once, when JAX starts its backends: later calls change nothing.
    """
    from jax._src import xla_bridge

    if getattr(xla_bridge, "backends_are_initialized", lambda: True)():
        return
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in CPU_XLA_FLAGS.items() if f"--{name}=" not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


def use_compilation_cache(path: str) -> None:
    """Point JAX's persistent compilation cache at `path` ('' leaves it as it is).

    Every program is cached, however quick it was to compile: on a warm cache a
    run skips XLA's compilation (tracing remains). The setting is process-wide
    and JAX opens the cache once, so the first directory a process uses stays.
    """
    if not path:
        return
    import jax

    current = getattr(jax.config, "jax_compilation_cache_dir", None)
    if current and os.path.abspath(current) != os.path.abspath(path):
        warn(f"--compilation_cache_dir: this process already caches in {current}; {path} is not used")
        return
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise ConfigError(f"--compilation_cache_dir: cannot use {path} ({e.strerror or e})") from None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
