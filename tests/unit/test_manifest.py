from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ManifestError
from conveyor.functions.manifest import parse_manifest
from conveyor.settings import QueueSettings, load_settings

QUEUES = {"realtime": QueueSettings(max_timeout=60), "default": QueueSettings()}


def parse(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "function.toml"
    path.write_text(text)
    return parse_manifest(path, QUEUES)


def test_only_handler_is_required(tmp_path: Path) -> None:
    manifest = parse(tmp_path, '[function]\nhandler = "handler:run"\n')
    assert manifest.module == "handler" and manifest.attribute == "run"
    assert manifest.queue.name == "default" and manifest.queue.priority == 5
    assert manifest.limits.timeout == 30 and manifest.limits.soft_timeout is None
    assert manifest.retries.max == 0 and manifest.retries.on == []
    assert manifest.results.ttl == 3600


def test_full_manifest(tmp_path: Path) -> None:
    manifest = parse(
        tmp_path,
        """
[function]
handler = "pkg.handler:Model"
description = "x"
[queue]
name = "realtime"
priority = 9
[resources]
gpu = 0
[limits]
timeout = 30
soft_timeout = 25.5
max_input_bytes = 100
[retries]
max = 2
backoff = 0.5
on = ["RuntimeError", "TimeoutError"]
[results]
ttl = 60
""",
    )
    assert manifest.queue.priority == 9
    assert manifest.limits.soft_timeout == 25.5
    assert manifest.retries.on == ["RuntimeError", "TimeoutError"]
    assert manifest.target_queue == "realtime"


def test_gpu_function_goes_to_the_gpu_variant_of_its_queue(tmp_path: Path) -> None:
    manifest = parse(
        tmp_path, '[function]\nhandler = "h:f"\n[queue]\nname = "realtime"\n[resources]\ngpu = 1\n'
    )
    assert manifest.resources.gpu == 1
    assert manifest.target_queue == "realtime.gpu"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[queue]\nname='default'\n", r"\[function\] handler is required"),
        ('[function]\nhandler = "handler"\n', r"\[function\] handler: String should match"),
        ('[function]\nhandler = "h:f"\ncolour = 1\n', r"\[function\] colour: unknown key"),
        (
            '[function]\nhandler = "h:f"\n[queue]\npriority = 10\n',
            r"\[queue\] priority: .*less than or equal to 9",
        ),
        (
            '[function]\nhandler = "h:f"\n[queue]\npriority = "high"\n',
            r"\[queue\] priority: .*valid integer",
        ),
        (
            '[function]\nhandler = "h:f"\n[limits]\ntimeout = 5\nsoft_timeout = 5\n',
            r"soft_timeout \(5.0\) must be below timeout",
        ),
        (
            '[function]\nhandler = "h:f"\n[limits]\ntimeout = -1\n',
            r"\[limits\] timeout: .*greater than 0",
        ),
        ('[function]\nhandler = "h:f"\n[retries]\non = ["not a name"]\n', r"\[retries\] on.0"),
        (
            '[function]\nhandler = "h:f"\n[queue]\nname = "gpu"\n',
            r"'gpu' is not a queue of this deployment \(deploy.toml has: default, realtime\)",
        ),
        (
            '[function]\nhandler = "h:f"\n[queue]\nname = "realtime"\n[limits]\ntimeout = 120\n',
            r"120.0s exceeds the max_timeout \(60.0s\) of queue 'realtime'",
        ),
        (
            '[function]\nhandler = "h:f"\n[resources]\ngpu = 2\n',
            r"\[resources\] gpu: Input should be 0 or 1",
        ),
        (
            '[function]\nhandler = "h:f"\n[batching]\nmax_batch_size = 0\n',
            r"\[batching\] max_batch_size: .*greater than or equal to 1",
        ),
        (
            '[function]\nhandler = "h:f"\n[batching]\nmax_size = 4\n',
            r"\[batching\] max_size: unknown key",
        ),
        ("[function\n", r"not valid TOML"),
        (
            '[function]\nhandler = "h:f"\n[training]\nhandler = "t:t"\nqueue = "gpu"\n',
            r"\[training\] queue: 'gpu' is not a queue of this deployment",
        ),
        (
            '[function]\nhandler = "h:f"\n[training]\nhandler = "t:t"\nqueue = "realtime"\ntimeout = 3600\n',
            r"\[training\] timeout: 3600.0s exceeds the max_timeout \(60.0s\) of queue 'realtime'",
        ),
        (
            '[function]\nhandler = "h:f"\n[training]\nhandle = "t:t"\n',
            r"\[training\] handler: required key is missing; .*\[training\] handle: unknown key",
        ),
        (
            '[function]\nhandler = "h:f"\n[[schedules]]\nevery = "1h"\ntraining = true\n',
            r"\[\[schedules\]\] #1 training: true needs a \[training\] table",
        ),
        (
            '[function]\nhandler = "h:f"\n[[schedules]]\nevery = "1h"\npromote = true\n',
            r"\[\[schedules\]\] #1: promote applies to a training",
        ),
        (
            '[function]\nhandler = "h:f"\n[limits]\nmax_checkpoint_bytes = 0\n',
            r"\[limits\] max_checkpoint_bytes: .*greater than 0",
        ),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected) as info:
        parse(tmp_path, text)
    assert str(tmp_path / "function.toml") in str(info.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing"):
        parse_manifest(tmp_path / "function.toml", QUEUES)


def test_a_manifest_nested_too_deeply_is_an_error(tmp_path: Path) -> None:
    for levels in (100, 5000):  # within what tomllib can read, and past it
        path = tmp_path / f"deep{levels}.toml"
        path.write_text("[function]\ndescription = " + "[" * levels + "]" * levels + "\n")
        with pytest.raises(ManifestError, match="deep"):
            parse_manifest(path, QUEUES)


def test_a_training_runs_under_its_own_table(tmp_path: Path) -> None:
    manifest = parse(
        tmp_path,
        '[function]\nhandler = "h:f"\n[queue]\nname = "realtime"\n[batching]\n'
        '[training]\nhandler = "train:train"\nqueue = "default"\ntimeout = 600\n',
    )
    trained = manifest.for_training()
    assert trained.handler == "train:train" and trained.target_queue == "default"
    assert trained.limits.timeout == 600 and trained.batching is None
    assert trained.retries == manifest.retries and trained.training is None


# Each section with only what it requires: the defaults of one never refuse another's.
HANDLER = '[function]\nhandler = "handler:run"\n'
MINIMAL_SECTIONS = {
    "function": HANDLER,
    "queue": HANDLER,  # [queue] with its name: added below
    "resources": HANDLER + "[resources]\n",
    "limits": HANDLER + "[limits]\n",
    "retries": HANDLER + "[retries]\n",
    "batching": HANDLER + "[batching]\n",
    "results": HANDLER + "[results]\n",
    "training": HANDLER + '[training]\nhandler = "train:train"\n',
    "schedules": HANDLER + '[[schedules]]\nevery = "1h"\n',
    "steps": '[[steps]]\nname = "one"\nfunction = "echo"\n',
    "pipeline": '[pipeline]\n[[steps]]\nname = "one"\nfunction = "echo"\n',
}


@pytest.mark.parametrize("section", sorted(MINIMAL_SECTIONS))
@pytest.mark.parametrize("queue", ["default", "realtime", "batch"])
def test_a_manifest_of_defaults_passes_on_every_queue_of_deploy_toml(
    tmp_path: Path, section: str, queue: str
) -> None:
    """The repository's deploy.toml, whatever queue the function names."""
    queues = load_settings(Path(__file__).parents[2] / "deploy.toml").queues
    text = MINIMAL_SECTIONS[section]
    if "[[steps]]" not in text:
        text = text.replace(HANDLER, HANDLER + f'[queue]\nname = "{queue}"\n', 1)
    path = tmp_path / "function.toml"
    path.write_text(text)
    manifest = parse_manifest(path, queues)
    if manifest.training is not None:
        training = manifest.for_training()
        assert training.limits.timeout == min(3600, queues[queue].max_timeout)
