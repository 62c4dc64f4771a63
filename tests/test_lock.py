"""The lock is what every install uses, and it never decides torch.

A fresh clone went red when an unpinned transformers release arrived; these tests keep the
install reproducible: every requirement of ``pyproject.toml`` is pinned in the lock, torch and
its CUDA wheels are not (``TORCH_SPEC`` chooses them), and the Makefile, CI and the Dockerfile
install from the lock.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK = REPO_ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def locked_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


def test_lock_pins_every_direct_requirement_within_its_range() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["worker"], *extras["dev"]]
    pins = locked_versions()
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{name} is not in the lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject's {requirement.specifier}: run `make lock`")


def test_lock_leaves_torch_and_its_cuda_wheels_to_torch_spec() -> None:
    pins = locked_versions()
    assert pins, "the lock has no pins"
    assert not [name for name in pins
                if name in {"torch", "triton"} or name.startswith("nvidia-")]
    assert not re.search(r"^(torch|triton|nvidia-)", LOCK.read_text(), re.MULTILINE)


def test_every_pin_carries_a_hash() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    pinned = [entry for entry in entries if PIN.match(entry)]
    assert len(pinned) == len(locked_versions())
    assert [entry.split()[0] for entry in pinned if "--hash=sha256:" not in entry] == []


def test_transformers_is_pinned_at_5_24_or_newer() -> None:
    version = tuple(int(part) for part in locked_versions()["transformers"].split(".")[:2])
    assert version >= (5, 24)


def test_makefile_ci_and_dockerfile_install_from_the_lock() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "LOCK := requirements.lock" in makefile
    assert "--require-hashes -r $(LOCK)" in makefile
    assert re.search(r"^lock:", makefile, re.MULTILINE)
    assert re.search(r"^test-latest:", makefile, re.MULTILINE)
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    copy_lines = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert any("requirements.lock" in line for line in copy_lines)
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert 'pip install ".[worker]"' not in dockerfile
