"""The backend registry with fake plugins: real dist-info metadata in a temporary directory.

`importlib.metadata.entry_points` is narrowed to the distributions in that
directory, so the installed plugins (torch, TensorFlow, ...) are neither listed
nor imported and each test takes milliseconds.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from mlp_research.backends import registry
from mlp_research.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
GOOD = "class Backend:\n    def version(self):\n        return 'fake 1.0'\n"


def only_from(site: str):
    """`importlib.metadata.entry_points`, reading only the distributions in `site` (sorted by name)."""

    def entry_points(**params):
        dists = sorted(md.distributions(path=[site]), key=lambda d: d.metadata["Name"])
        return md.EntryPoints(ep for dist in dists for ep in dist.entry_points).select(**params)

    return entry_points


class Plugins:
    """Writes fake plugin packages: a dist-info registering backends, and one module per backend."""

    def __init__(self, site: Path) -> None:
        self.site = site
        self.modules: list[str] = []

    def add(self, package: str, backends: dict[str, str], version: str = "1.0") -> None:
        """`backends` maps a backend name to its module's source, which defines `Backend`."""
        lines = [f"[{registry.GROUP}]"]
        for name, source in backends.items():
            module = f"fake_{name}_{uuid.uuid4().hex[:8]}"
            (self.site / f"{module}.py").write_text(source)
            self.modules.append(module)
            lines.append(f"{name} = {module}:Backend")
        info = self.site / f"{package.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(md, "entry_points", only_from(str(site)))
    monkeypatch.setattr(registry, "_warned", set())
    fake = Plugins(site)
    # Stands in for the core package's own entry point, so that no test imports JAX.
    fake.add("mlp-research", {"jax": GOOD})
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)


FATAL_IMPORTS = {
    "sys.exit(3)": ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    "sys.exit()": ("import sys\nsys.exit()\n", "SystemExit"),
    "BaseException": ("class Boom(BaseException):\n    pass\nraise Boom('kaboom')\n", "Boom: kaboom"),
}


@pytest.mark.parametrize("case", list(FATAL_IMPORTS))
def test_plugin_that_exits_at_import_is_reported_and_the_others_listed(plugins, case):
    source, error = FATAL_IMPORTS[case]
    plugins.add("broken-plugin", {"broken": source}, version="0.3")
    plugins.add("other-plugin", {"other": GOOD})
    rows = {row["backend"]: row for row in registry.status()}
    assert set(rows) == {"broken", "jax", "other"}
    assert rows["broken"]["loads"] is False
    assert rows["broken"]["package"] == "broken-plugin" and rows["broken"]["package_version"] == "0.3"
    assert rows["broken"]["error"] == (f"--backend: backend 'broken' from package broken-plugin failed to load: "
                                       f"{error}")
    assert rows["other"]["loads"] and rows["other"]["framework_version"] == "fake 1.0"
    assert rows["jax"]["loads"]


def test_selecting_a_plugin_that_exits_is_a_config_error(plugins):
    plugins.add("broken-plugin", {"broken": "import sys\nsys.exit('bye')\n"})
    with pytest.raises(ConfigError, match="'broken' from package broken-plugin failed to load: SystemExit: bye"):
        registry.load("broken")


def test_a_plugin_whose_version_exits_is_reported(plugins):
    plugins.add("odd-plugin", {"odd": "import sys\nclass Backend:\n    def version(self):\n        sys.exit(1)\n"})
    row = next(row for row in registry.status() if row["backend"] == "odd")
    assert row["loads"] is False and "odd-plugin failed to load: SystemExit: 1" in row["error"]


def test_ctrl_c_during_a_plugin_import_still_stops(plugins):
    plugins.add("slow-plugin", {"slow": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        registry.load("slow")


def test_duplicate_registration_warns_once_naming_both_packages(plugins, capsys):
    plugins.add("alpha-plugin", {"dup": GOOD}, version="1.1")
    plugins.add("beta-plugin", {"dup": GOOD}, version="2.0")
    for _ in range(3):
        rows = registry.status()
        registry.available()
    assert [row["package"] for row in rows if row["backend"] == "dup"] == ["alpha-plugin"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "registered twice" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: backend 'dup' is registered twice, by package alpha-plugin 1.1 (")
    assert "by package beta-plugin 2.0 (" in warnings[0] and warnings[0].endswith("using alpha-plugin's")


LAUNCHER = textwrap.dedent(inspect.getsource(only_from)) + textwrap.dedent("""
    import importlib.metadata as md
    import runpy
    import sys

    site = sys.argv.pop(1)
    sys.path.insert(0, site)
    md.entry_points = only_from(site)
    runpy.run_module("experiments.backends", run_name="__main__", alter_sys=True)
""")


def test_listing_command_survives_an_exiting_plugin_and_warns_once(plugins):
    plugins.add("broken-plugin", {"broken": "import sys\nsys.exit(3)\n"})
    plugins.add("alpha-plugin", {"dup": GOOD, "zeta": GOOD})
    plugins.add("beta-plugin", {"dup": GOOD})
    result = subprocess.run([sys.executable, "-c", LAUNCHER, str(plugins.site)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["broken", "dup", "jax", "zeta"], result
    assert "broken-plugin" in lines[0] and "SystemExit: 3" in lines[0]
    assert all("loads, fake 1.0" in line for line in lines[1:]), lines
    assert result.returncode == 1  # not every backend loads
    assert result.stderr.count("registered twice") == 1 and "Traceback" not in result.stderr, result.stderr
