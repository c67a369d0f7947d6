from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import SettingsError
from conveyor.settings import load_settings


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tmp_path / "deploy.toml")
    assert settings.redis.url == "redis://127.0.0.1:6390/0"
    assert settings.api.port == 8000
    assert settings.functions.dir == tmp_path / "functions"
    assert list(settings.queues) == ["default"]


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "deploy.toml"
    config.parent.mkdir()
    config.write_text(
        '[redis]\nurl = "redis://127.0.0.1:7000/1"\n[api]\nport = 9001\n'
        '[functions]\ndir = "fns"\n[queues.realtime]\nmax_timeout = 10\n[queues.batch]\n'
    )
    settings = load_settings(config)
    assert settings.redis.url == "redis://127.0.0.1:7000/1"
    assert settings.api.port == 9001
    assert settings.functions.dir == config.parent / "fns"
    assert settings.queues["realtime"].max_timeout == 10
    assert set(settings.queues) == {"realtime", "batch"}


def test_environment_overrides_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "deploy.toml"
    config.write_text('[api]\nport = 9001\nhost = "0.0.0.0"\n[queues.realtime]\n')
    monkeypatch.setenv("CONVEYOR_API__PORT", "9100")
    monkeypatch.setenv("CONVEYOR_REDIS__URL", "redis://127.0.0.1:7777/0")
    monkeypatch.setenv("CONVEYOR_QUEUES__REALTIME__MAX_TIMEOUT", "5")
    monkeypatch.setenv("CONVEYOR_FUNCTIONS__DIR", "/srv/functions")
    settings = load_settings(config)
    assert settings.api.port == 9100
    assert settings.api.host == "0.0.0.0"  # untouched keys keep the file's value
    assert settings.redis.url == "redis://127.0.0.1:7777/0"
    assert settings.queues["realtime"].max_timeout == 5
    assert settings.functions.dir == Path("/srv/functions")


def test_conveyor_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "other.toml"
    config.write_text("[api]\nport = 9200\n")
    monkeypatch.setenv("CONVEYOR_CONFIG", str(config))
    assert load_settings().api.port == 9200
    monkeypatch.setenv("CONVEYOR_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[api]\nport = 99999\n", r"api\.port \(or \$CONVEYOR_API__PORT\): .*less than or equal"),
        ("[api]\nbogus = 1\n", r"api\.bogus .*Extra inputs"),
        ('[redis]\nurl = "http://x"\n', r"redis\.url .*redis://"),
        ("[queues.Bad]\n", r"queue names must match"),
        (
            "[redis]\nmin_replicas = 1\nreplica_timeout = 10\n",
            r"replica_timeout \(10\) must be shorter than socket_timeout \(10\)",
        ),
        ("[api\n", r"cannot read"),
    ],
)
def test_bad_settings_name_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "deploy.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=expected) as info:
        load_settings(config)
    assert str(config) in str(info.value)


def test_bad_environment_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_WORKER__CONCURRENCY", "zero")
    with pytest.raises(SettingsError, match=r"worker\.concurrency"):
        load_settings(tmp_path / "deploy.toml")


def test_repo_deploy_toml_is_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings(repo / "deploy.toml")
    assert {"realtime", "batch", "default"} <= set(settings.queues)
    assert settings.redis.url.endswith(":6390/0")


def test_sentinels_from_the_environment_make_the_broker_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.broker.app import transport_options
    from conveyor.db.connections import broker_url

    monkeypatch.setenv("CONVEYOR_REDIS__SENTINELS", '["10.0.0.5:26379", "[::1]:26380"]')
    monkeypatch.setenv("CONVEYOR_REDIS__PASSWORD", "p@ss/word")
    monkeypatch.setenv("CONVEYOR_REDIS__SENTINEL_PASSWORD", "s3")
    settings = load_settings(tmp_path / "deploy.toml")
    assert settings.redis.sentinel_addresses() == [("10.0.0.5", 26379), ("::1", 26380)]
    assert broker_url(settings) == (
        "sentinel://:p%40ss%2Fword@10.0.0.5:26379/0;sentinel://:p%40ss%2Fword@[::1]:26380/0"
    )
    options = transport_options(settings, None)
    assert options["master_name"] == "conveyor"
    assert options["sentinel_kwargs"]["password"] == "s3"


@pytest.mark.parametrize("entry", ["10.0.0.5", "host:", ":26379", "host:99999", "host:port"])
def test_a_sentinel_is_host_and_port(tmp_path: Path, entry: str) -> None:
    config = tmp_path / "deploy.toml"
    config.write_text(f'[redis]\nsentinels = ["{entry}"]\n')
    with pytest.raises(SettingsError, match="each sentinel is"):
        load_settings(config)


def test_a_list_that_is_not_json_in_the_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS__SENTINELS", "[10.0.0.5:26379]")
    with pytest.raises(SettingsError, match=r"is JSON, e\.g\. CONVEYOR_REDIS__SENTINELS="):
        load_settings(tmp_path / "deploy.toml")
