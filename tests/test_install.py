"""The reproducible install: requirements/lock.txt, scripts/setup.sh, scripts/lock.sh and the environment they build.

Fast and offline: the lock and the pyproject files are read as text, the running environment through
importlib.metadata, and the two scripts run against a stand-in interpreter that records every pip call.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
PYPROJECTS = [REPO / "pyproject.toml", *sorted(REPO.glob("plugins/*/pyproject.toml"))]
NODEPS_FILES = sorted(REPO.glob("plugins/*/requirements-nodeps.txt"))
REGENERATE = "regenerate the lock with `bash scripts/lock.sh`"


def read_pins(path: Path) -> dict[str, Version]:
    """`name==version` lines of a requirements file, by normalised name; anything else is an error."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if req.url or req.extras or req.marker or len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{path.name}:{number}: {raw!r} is not a name==version pin")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"{path.name}:{number}: {req.name} is pinned twice")
        pins[name] = Version(specs[0].version)
    return pins


def project(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())["project"]


PROJECT_NAMES = {canonicalize_name(project(p)["name"]) for p in PYPROJECTS}


def declared_requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every dependency and extra the core and the plugins declare, and the pins of
    the plugins' requirements-nodeps.txt; markers are not evaluated here."""
    declared = []
    for pyproject in PYPROJECTS:
        where = pyproject.relative_to(REPO)
        meta = project(pyproject)
        declared += [(f"{where} dependencies", Requirement(text)) for text in meta.get("dependencies", [])]
        for extra, texts in meta.get("optional-dependencies", {}).items():
            declared += [(f"{where} [{extra}]", Requirement(text)) for text in texts]
    for nodeps in NODEPS_FILES:
        declared += [(str(nodeps.relative_to(REPO)), Requirement(f"{name}=={version}"))
                     for name, version in read_pins(nodeps).items()]
    return declared


def applies_here(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({"extra": extra})


# ---- the lock file itself -------------------------------------------------------------------------------------


def test_lock_parses_as_exact_pins_of_third_party_packages():
    pins = read_pins(LOCK)
    assert len(pins) > 50, f"{LOCK} holds only {len(pins)} pins"
    assert not PROJECT_NAMES & set(pins), "the project's own (editable) packages must not be pinned in the lock"
    # pip and the build tools that packages require at run time are part of the set setup.sh installs.
    assert {"pip", "setuptools", "jax", "torch"} <= set(pins)


def test_lock_pins_the_torch_build_that_setup_asks_for_by_default():
    default = re.search(r"^DEFAULT_TORCH_SPEC=(\S+)$", (REPO / "scripts/setup.sh").read_text(), re.M)
    assert default, "scripts/setup.sh no longer sets DEFAULT_TORCH_SPEC"
    spec = Requirement(default.group(1))
    locked = read_pins(LOCK)["torch"]
    # `torch==2.13.0` admits the local build 2.13.0+cpu (PEP 440); the lock's exact pin then picks that build.
    assert spec.specifier.contains(locked), f"setup.sh's default {spec} does not admit the locked torch {locked}"


def test_lock_covers_every_declared_dependency_within_its_range():
    pins = read_pins(LOCK)
    problems = []
    for where, req in declared_requirements():
        name = canonicalize_name(req.name)
        if name in PROJECT_NAMES or not applies_here(req):  # e.g. plain tensorflow, declared for non-x86-64 only
            continue
        if name not in pins:
            problems.append(f"{where}: {req} is not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{where}: {req} does not admit the locked {name}=={pins[name]}")
    assert not problems, "\n".join(problems) + f"\n{REGENERATE}"


def test_plugins_require_the_core_release_they_are_built_with():
    core = Version(project(REPO / "pyproject.toml")["version"])
    next_minor = Version(f"{core.major}.{core.minor + 1}")
    for pyproject in PYPROJECTS[1:]:
        reqs = [Requirement(t) for t in project(pyproject).get("dependencies", [])]
        on_core = [r for r in reqs if canonicalize_name(r.name) == "mlp-research"]
        where = pyproject.relative_to(REPO)
        assert len(on_core) == 1, f"{where} must depend on mlp-research exactly once"
        spec = on_core[0].specifier
        assert spec.contains(core), f"{where}: {on_core[0]} excludes the core's version {core}"
        assert not spec.contains(next_minor), f"{where}: {on_core[0]} admits {next_minor}, whose internals may differ"


# ---- the running environment (what CI checks after scripts/setup.sh) ------------------------------------------


@pytest.fixture
def setup_stamp() -> dict[str, str]:
    """The settings scripts/setup.sh recorded for the running environment; skips environments it did not build."""
    stamp = Path(sys.prefix) / ".setup-stamp"
    if not stamp.is_file():
        pytest.skip(f"{sys.prefix} was not built by scripts/setup.sh (no .setup-stamp)")
    fields = dict(re.findall(r"^(\w+)=(.*)$", stamp.read_text(), re.M))
    # Stamps written before the lock existed carry no `constraints`: check them against the lock as well.
    fields.setdefault("constraints", "lock")
    if fields["constraints"] == "none":
        pytest.skip("set up with MLP_RESEARCH_UNLOCKED=1: versions come from the pyproject ranges")
    return fields


def stale_hint(stamp: dict[str, str]) -> str:
    current = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if stamp.get("lock_sha256", current) != current:
        return "\nthe environment was set up from another lock: rerun `bash scripts/setup.sh`"
    return "\nrecreate the environment: rm -rf .venv && bash scripts/setup.sh"


def test_environment_has_exactly_the_locked_versions(setup_stamp):
    problems = []
    for name, locked in read_pins(LOCK).items():
        try:
            installed = Version(md.version(name))
        except md.PackageNotFoundError:
            problems.append(f"{name}=={locked} is not installed")
            continue
        if name == "torch" and setup_stamp["constraints"] == "lock-without-torch":
            # TORCH_SPEC/TORCH_INDEX_URL chose the build (e.g. 2.13.0+cu128): it must be the one asked for.
            asked = Requirement(setup_stamp["torch_spec"])
            if not asked.specifier.contains(installed, prereleases=True):
                problems.append(f"torch: installed {installed}, but setup asked for {asked}")
        elif installed != locked:
            problems.append(f"{name}: installed {installed}, lock {locked}")
    assert not problems, "\n".join(problems) + stale_hint(setup_stamp)


def test_lock_holds_every_dependency_of_the_installed_set_and_nothing_else(setup_stamp):
    """Walks the installed metadata from what the project declares: every package reached must be locked, and
    every locked package reached (pip is installed by setup.sh itself; --no-deps packages are not descended)."""
    pins = read_pins(LOCK)
    torch_locked = setup_stamp["constraints"] == "lock"
    no_deps = {name for nodeps in NODEPS_FILES for name in read_pins(nodeps)}
    # (name, extra, strict, required by): strict is False below a torch build the lock does not constrain.
    todo = [(canonicalize_name(r.name), extra, True, where) for where, r in declared_requirements()
            for extra in ("", *r.extras) if applies_here(r)]
    todo.append(("pip", "", True, "scripts/setup.sh"))
    seen, reached, missing = set(), set(), []
    while todo:
        name, extra, strict, parent = todo.pop()
        if name in PROJECT_NAMES or (name, extra) in seen:
            continue
        seen.add((name, extra))
        reached.add(name)
        if strict and name not in pins:
            missing.append(f"{name} (required by {parent})")
        if name in no_deps:
            continue
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue  # reported by test_environment_has_exactly_the_locked_versions
        child_strict = strict and (torch_locked or name != "torch")
        for text in requires:
            req = Requirement(text)
            if applies_here(req, extra):
                todo += [(canonicalize_name(req.name), e, child_strict, name) for e in ("", *req.extras)]
    assert not missing, "installed but not in the lock: " + ", ".join(sorted(set(missing))) + f"\n{REGENERATE}"
    if torch_locked:
        extra_pins = sorted(set(pins) - reached)
        assert not extra_pins, f"locked but required by nothing setup.sh installs: {extra_pins}\n{REGENERATE}"


# ---- scripts/setup.sh and scripts/lock.sh against a stand-in interpreter -------------------------------------

STAND_IN = r'''
import json, os, shutil, sys

args = sys.argv[1:]
if args[:2] == ["-m", "venv"]:
    os.makedirs(os.path.join(args[2], "bin"))
    shutil.copy(os.environ["STAND_IN_PYTHON"], os.path.join(args[2], "bin", "python"))
elif args[:2] == ["-m", "pip"]:
    constraints = [[a, open(b).read()] for a, b in zip(args, args[1:]) if a in ("-c", "--build-constraint")]
    with open(os.environ["STAND_IN_LOG"], "a") as log:
        log.write(json.dumps({"argv": args, "constraints": constraints}) + "\n")
    if "freeze" in args:
        sys.stdout.write(os.environ.get("STAND_IN_FREEZE", ""))
    failing = os.environ.get("STAND_IN_FAIL_ON")
    sys.exit(1 if failing and any(a.startswith(failing) for a in args) else 0)
elif args[:1] == ["-c"] and "version_info" not in args[1]:
    print("stand-in")
'''


class Sandbox:
    """A copy of the files the install scripts read, with a stand-in `python` that logs pip calls as JSON."""

    def __init__(self, root: Path):
        self.root = root / "repo"
        for rel in ["scripts/setup.sh", "scripts/lock.sh", "requirements/lock.txt",
                    *(str(p.relative_to(REPO)) for p in PYPROJECTS[1:] + NODEPS_FILES), "pyproject.toml"]:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, self.root / rel)
        (root / "stand_in.py").write_text(STAND_IN)
        self.python = root / "python"
        self.python.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "{root / "stand_in.py"}" "$@"\n')
        self.python.chmod(0o755)
        self.log = root / "pip-calls.jsonl"
        self.log.touch()

    def run(self, script: str, **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
        before = len(self.log.read_text().splitlines())
        environ = {k: v for k, v in os.environ.items()
                   if k not in {"TORCH_SPEC", "TORCH_INDEX_URL", "MLP_RESEARCH_UNLOCKED", "MLP_RESEARCH_VENV"}}
        environ.update(PYTHON=str(self.python), STAND_IN_PYTHON=str(self.python), STAND_IN_LOG=str(self.log), **env)
        done = subprocess.run(["bash", str(self.root / script)], env=environ, capture_output=True, text=True,
                              timeout=120)
        calls = [json.loads(line) for line in self.log.read_text().splitlines()[before:]]
        return done, calls

    def stamp(self) -> str:
        return (self.root / ".venv/.setup-stamp").read_text()


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


def installs(calls: list[dict]) -> list[list[str]]:
    """What each pip call installs: its arguments after `install` less the constraint files; fails on a pip
    call that is not an install."""
    out = []
    for call in calls:
        argv = call["argv"]
        assert "install" in argv, f"setup.sh ran pip without installing: {argv}"
        args = argv[argv.index("install") + 1:]
        while args[0] in ("-c", "--build-constraint"):
            args = args[2:]
        out.append(args)
    return out


def expected_constraints(calls: list[dict], text: str) -> list[list[list[str]]]:
    """The lock as -c for every call; as --build-constraint too from the second (the first installs the pip
    that understands it)."""
    return [[["-c", text]]] + [[["-c", text], ["--build-constraint", text]]] * (len(calls) - 1)


def test_setup_passes_the_lock_to_every_pip_install(sandbox):
    done, calls = sandbox.run("scripts/setup.sh")
    assert done.returncode == 0, done.stderr
    assert [call["constraints"] for call in calls] == expected_constraints(calls, LOCK.read_text())
    args = installs(calls)
    assert args[0] == ["--upgrade", "pip"]
    # torch's build alone, then its dependencies (both before anything that depends on torch)
    assert args[1:3] == [["--no-deps", "torch==2.13.0"], ["torch==2.13.0"]]
    no_deps = {os.path.normpath(a[2]) for a in args if a[:2] == ["--no-deps", "-r"]}
    assert no_deps == {str(p.relative_to(REPO)) for p in NODEPS_FILES}
    editables = {os.path.normpath(a[1]) for a in args if a[0] == "-e"}
    assert editables == {".[tfds,notebook,test]", *(str(p.parent.relative_to(REPO)) for p in PYPROJECTS[1:])}


def test_setup_is_idempotent_and_reinstalls_when_the_lock_changes(sandbox):
    assert sandbox.run("scripts/setup.sh")[0].returncode == 0
    assert hashlib.sha256(LOCK.read_bytes()).hexdigest() in sandbox.stamp()
    done, calls = sandbox.run("scripts/setup.sh")
    assert done.returncode == 0 and calls == [], "an unchanged setup ran pip again"
    lock = sandbox.root / "requirements/lock.txt"
    lock.write_text(re.sub(r"^absl-py==.*$", "absl-py==0.0.1", lock.read_text(), flags=re.M))
    done, calls = sandbox.run("scripts/setup.sh")
    assert done.returncode == 0 and len(calls) >= 5, "an edited lock did not trigger a reinstall"
    assert all("absl-py==0.0.1" in call["constraints"][0][1] for call in calls)


@pytest.mark.parametrize("env", [{"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu128"},
                                 {"TORCH_SPEC": "torch==2.12.0"}], ids=["index", "spec"])
def test_a_chosen_torch_build_is_left_out_of_the_lock(sandbox, env):
    done, calls = sandbox.run("scripts/setup.sh", **env)
    assert done.returncode == 0, done.stderr
    without_torch = "".join(line for line in LOCK.read_text().splitlines(keepends=True)
                            if not line.startswith("torch=="))
    assert without_torch != LOCK.read_text()
    assert [call["constraints"] for call in calls] == expected_constraints(calls, without_torch)
    torch_calls = [a for a in installs(calls) if any(x.startswith("torch==") for x in a)]
    if "TORCH_INDEX_URL" in env:  # the build from that index; its dependencies from the usual one, locked
        assert torch_calls == [["--no-deps", "torch==2.13.0", "--index-url", env["TORCH_INDEX_URL"]], ["torch==2.13.0"]]
    else:
        assert torch_calls == [["--no-deps", "torch==2.12.0"], ["torch==2.12.0"]]
    assert "constraints=lock-without-torch" in sandbox.stamp()


def test_unlocked_setup_resolves_from_the_ranges(sandbox):
    done, calls = sandbox.run("scripts/setup.sh", MLP_RESEARCH_UNLOCKED="1")
    assert done.returncode == 0, done.stderr
    assert len(calls) >= 5 and all(call["constraints"] == [] for call in calls)
    assert "constraints=none" in sandbox.stamp()
    done, calls = sandbox.run("scripts/setup.sh", MLP_RESEARCH_UNLOCKED="yes")
    assert done.returncode == 2 and calls == []
    assert done.stderr.strip() == "error: MLP_RESEARCH_UNLOCKED must be 0 or 1, not 'yes'"


def test_setup_errors_in_one_line(sandbox):
    done, calls = sandbox.run("scripts/setup.sh", STAND_IN_FAIL_ON="torch")
    assert done.returncode == 1
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in done.stderr.splitlines()[-1]
    assert not (sandbox.root / ".venv/.setup-stamp").exists()
    (sandbox.root / "requirements/lock.txt").unlink()
    done, calls = sandbox.run("scripts/setup.sh")
    assert (done.returncode, calls) == (2, [])
    assert done.stderr.count("\n") == 1 and "bash scripts/lock.sh" in done.stderr


def test_lock_script_freezes_an_unlocked_setup(sandbox):
    freeze = "absl-py==2.5.1\npip==26.3\ntorch==2.13.0+cpu\n"
    done, calls = sandbox.run("scripts/lock.sh", STAND_IN_FREEZE=freeze)
    assert done.returncode == 0, done.stderr
    *setup_calls, freeze_call = calls
    assert setup_calls and all(call["constraints"] == [] for call in setup_calls), "the lock must come from ranges"
    assert freeze_call["argv"][-3:] == ["freeze", "--all", "--exclude-editable"]
    written = (sandbox.root / "requirements/lock.txt").read_text()
    assert written.startswith("# ") and written.endswith(freeze)
    assert read_pins(sandbox.root / "requirements/lock.txt") == {
        "absl-py": Version("2.5.1"), "pip": Version("26.3"), "torch": Version("2.13.0+cpu")}
    assert not (sandbox.root / ".venv").exists(), "lock.sh must not touch the repository's .venv"


def test_lock_script_refuses_what_is_not_a_pin(sandbox):
    before = (sandbox.root / "requirements/lock.txt").read_text()
    done, _ = sandbox.run("scripts/lock.sh", STAND_IN_FREEZE="absl-py==2.5.1\nfoo @ file:///tmp/foo.whl\n")
    assert done.returncode == 1 and "foo @ file:///tmp/foo.whl" in done.stderr.splitlines()[-1]
    assert (sandbox.root / "requirements/lock.txt").read_text() == before
    done, calls = sandbox.run("scripts/lock.sh", TORCH_INDEX_URL="https://download.pytorch.org/whl/cu128")
    assert (done.returncode, calls) == (2, [])
