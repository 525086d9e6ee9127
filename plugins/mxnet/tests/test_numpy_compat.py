"""The numpy-2 compatibility layer adds only missing names and changes nothing that existed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from mlp_research_mxnet import numpy_compat


def test_apply_in_fresh_process_adds_only_missing_names_and_keeps_existing_ones() -> None:
    # A fresh interpreter: this process may already have imported mxnet (and so applied the layer).
    script = textwrap.dedent("""
        import numpy as np
        np.PZERO = "sentinel"  # pretend numpy still had one of the names: it must survive
        before = {name: getattr(np, name) for name in dir(np)}
        from mlp_research_mxnet import numpy_compat
        added = numpy_compat.apply()
        assert np.PZERO == "sentinel", np.PZERO
        changed = [n for n, v in before.items() if getattr(np, n) is not v]
        assert not changed, changed
        assert set(added) == set(dir(np)) - set(before), added
        assert "PZERO" not in added and "alltrue" in added and "compat" in added, added
        assert numpy_compat.apply() == []  # idempotent
        import mxnet  # the point of the layer
        print("ok", len(added))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "ok"


def test_restored_names_behave_like_numpy_1() -> None:
    numpy_compat.apply()
    assert np.array_equal(np.in1d(np.array([[1, 5], [3, 7]]), [3, 5]), [False, True, True, False])
    assert np.array_equal(np.msort(np.array([[3, 1], [1, 2]])), [[1, 1], [3, 2]])
    assert np.alltrue([True, True]) and not np.sometrue([False, False])
    assert np.product([2, 3]) == 6 and np.NINF == -np.inf and np.compat.basestring is str
    assert np.trapz([1.0, 1.0]) == 1.0


def test_backend_import_version_and_check_import_no_mxnet() -> None:
    # Listing backends loads the backend class and asks its version: neither may import mxnet.
    script = textwrap.dedent("""
        import sys
        from mlp_research.config import Config
        from mlp_research_mxnet.backend import MXNetBackend
        backend = MXNetBackend()
        assert backend.version() == "1.9.1", backend.version()
        backend.check(Config().replace(backend="mxnet"))
        assert "mxnet" not in sys.modules and not hasattr(__import__("numpy"), "alltrue")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
