"""The environment files agree, and the installed versions are the pinned ones."""

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_deps() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _split(req: str) -> tuple[str, str]:
    name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)
    return name.lower().replace("_", "-"), req[len(name):].replace(" ", "")


def test_environment_yml_names_the_same_packages_and_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = dict(_split(r) for r in pip_section if not r.startswith("-e"))
    assert "-e ." in pip_section, "environment.yml must install the moe_lab package itself"
    assert conda_pins == dict(_split(r) for r in _pyproject_deps())
    assert "python=3.11" in env["dependencies"]


def test_numpy_is_below_2_and_mindspore_pinned():
    deps = dict(_split(r) for r in _pyproject_deps())
    assert deps["numpy"] == ">=1.25,<2"  # MindSpore 2.10's tensor arithmetic fails on NumPy 2
    assert deps["mindspore"] == "==2.10.0"
    assert int(version("numpy").split(".")[0]) < 2


def test_installed_versions_match_exact_pins():
    for name, spec in (_split(r) for r in _pyproject_deps()):
        if spec.startswith("=="):
            assert version(name) == spec[2:], name
