"""[environment] as the folder declares it, its requirement lines, the runtime's pins and
which environments a worker's queues need: no network, no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.environments.requirements import requirement_lines
from conveyor.environments.resolve import environment_id, explain, runtime_pins
from conveyor.errors import EnvironmentResolveError, ManifestError
from conveyor.functions.manifest import EnvironmentSection, Manifest, parse_manifest
from conveyor.worker.environments import wanted_environments
from tests.support import QUEUES

FN = '[function]\nhandler = "handler:run"\n'


def manifest(folder: Path, text: str, requirements: str | None = None) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function.toml").write_text(text)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return parse_manifest(folder / "function.toml", QUEUES)


def test_a_requirements_file_beside_the_manifest_is_the_environment(tmp_path: Path) -> None:
    found = manifest(tmp_path / "f", FN, "numpy<2\n")
    assert found.environment == EnvironmentSection(requirements="requirements.txt")
    assert found.environment_id is None and found.target_queue == "default"
    resolved = found.with_environment("0123456789abcdef")
    assert resolved.target_queue == "default.env-0123456789abcdef"
    assert manifest(tmp_path / "g", FN).environment is None


def test_the_section_is_checked(tmp_path: Path) -> None:
    cases = {
        '[environment]\npackages = ["x"]\nrequirements = "r.txt"\n': "not both",
        "[environment]\n": "give requirements",
        '[environment]\nrequirements = "../r.txt"\n': "inside the function's folder",
        '[environment]\nrequirements = "missing.txt"\n': "not a file",
        '[environment]\npackages = ["x"]\nid = "0123456789abcdef"\n': "the platform sets it",
    }
    for i, (section, reason) in enumerate(cases.items()):
        with pytest.raises(ManifestError, match=reason):
            manifest(tmp_path / f"f{i}", FN + section)


def test_a_gpu_function_gets_its_environments_gpu_queue(tmp_path: Path) -> None:
    found = manifest(tmp_path / "f", FN + "[resources]\ngpu = 1\n", "x\n")
    assert found.with_environment("0" * 16).target_queue == f"default.gpu.env-{'0' * 16}"


def test_requirement_lines(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "# a comment\n\nnumpy<2  # trailing\nscipy==1.13.*; python_version >= '3.11'\n"
    )
    section = EnvironmentSection(requirements="requirements.txt")
    assert requirement_lines(tmp_path, section) == [
        "numpy<2",
        'scipy==1.13.*; python_version >= "3.11"',
    ]
    bad = {
        "--extra-index-url http://x\n": "line 1: '--extra-index-url http://x': options",
        "-e .\n": "options are not taken",
        "numpy\n-r other.txt\n": "line 2",
        "pkg @ file:///etc/passwd\n": "a URL or path",
        "numpy<<2\n": "is not a requirement",
    }
    for text, reason in bad.items():
        (tmp_path / "requirements.txt").write_text(text)
        with pytest.raises(EnvironmentResolveError, match=reason):
            requirement_lines(tmp_path, section)
    inline = EnvironmentSection(packages=["numpy<2", "--index-url=x"])
    with pytest.raises(EnvironmentResolveError, match=r"\[environment\] packages"):
        requirement_lines(tmp_path, inline)


def test_the_runtime_pins_what_a_worker_imports() -> None:
    pins = dict(pin.split("==") for pin in runtime_pins())
    for name in ("celery", "kombu", "redis", "pydantic", "structlog", "billiard", "uv"):
        assert name in pins, name
    assert "conveyor" not in pins and "torch" not in pins and "pytest" not in pins


def test_a_conflict_names_the_runtimes_pin() -> None:
    stderr = (
        "  x No solution found when resolving dependencies:\n"
        "  ╰─▶ Because you require redis<4 and redis==8.2.0, we can conclude that your"
        " requirements are unsatisfiable.\n"
    )
    message = explain(["redis<4"], ("celery==5.7.0", "redis==8.2.0"), stderr)
    assert "redis<4" in message and "the worker runtime pins redis==8.2.0" in message
    assert "celery" not in message
    assert environment_id("a") != environment_id("b") and len(environment_id("a")) == 16


def test_the_environments_a_workers_queues_need(tmp_path: Path) -> None:
    plain = manifest(tmp_path / "p", FN)
    own = manifest(tmp_path / "o", FN, "x\n").with_environment("a" * 16)
    batch = manifest(tmp_path / "b", FN + '[queue]\nname = "batch"\n', "x\n")
    trained = manifest(
        tmp_path / "t", FN + '[training]\nhandler = "t:t"\nqueue = "batch"\n', "x\n"
    ).with_environment("b" * 16)
    serving = {
        "plain": ("1", plain),
        "own": ("1", own),
        "batch": ("1", batch.with_environment("c" * 16)),
        "trained": ("1", trained),
    }
    assert wanted_environments(serving, ["default"]) == {
        "a" * 16: ("default",),
        "b" * 16: ("default",),
    }
    assert wanted_environments(serving, ["batch"]) == {"b" * 16: ("batch",), "c" * 16: ("batch",)}
