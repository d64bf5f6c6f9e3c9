"""The command line as a user types it: help for every verb, settings from flags and env."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatsys.runtime.settings import SettingsError, load

VERBS = [["gateway"], ["users"], ["chat"], ["users", "chat"], ["files"], ["all"]]


def chatsys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatsys", *args], capture_output=True,
                          text=True, timeout=60)


def test_top_level_help_lists_verbs() -> None:
    result = chatsys("--help")
    assert result.returncode == 0
    for verb in ("gateway", "users", "chat", "files", "all"):
        assert verb in result.stdout


@pytest.mark.parametrize("verbs", VERBS, ids=" ".join)
def test_every_verb_has_help(verbs: list[str]) -> None:
    result = chatsys(*verbs, "--help")
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout and "CHATSYS_PORT" in result.stdout
    assert "--log-format" in result.stdout


def test_gateway_help_names_the_fixed_flags() -> None:
    out = chatsys("gateway", "--help").stdout
    for flag in ("--users-addr", "--chat-addr", "--files-addr", "--server", "--workers",
                 "--max-connections", "--rate-limit"):
        assert flag in out


def test_unknown_verb_and_bad_values_are_clear_errors() -> None:
    unknown = chatsys("frobnicate")
    assert unknown.returncode == 2 and "unknown verb" in unknown.stderr
    bad = chatsys("gateway", "--server", "nginx")
    assert bad.returncode == 2 and "--server" in bad.stderr and "granian" in bad.stderr
    bad_env = subprocess.run([sys.executable, "-m", "chatsys", "files"], capture_output=True,
                             text=True, timeout=60, env={"CHATSYS_PORT": "http"})
    assert bad_env.returncode == 2 and "CHATSYS_PORT" in bad_env.stderr


def test_flag_wins_over_environment_and_defaults_per_verb() -> None:
    env = {"CHATSYS_PORT": "7000", "CHATSYS_LOG_FORMAT": "json"}
    assert load(["gateway"], {"port": "7001"}, env).port == 7001
    settings = load(["gateway"], {}, env)
    assert settings.port == 7000 and settings.log_format == "json"
    assert load(["users", "chat"], {}, {}).port == 50051
    assert load(["files"], {}, {}).port == 50052
    assert load(["files"], {}, {}).metrics_port == 9101
    assert load(["gateway"], {}, {}).port == 8080
    assert load(["users"], {"data_dir": "/tmp/x"}, {}).store_url == "sqlite:////tmp/x/chatsys.db"


@pytest.mark.parametrize("flags", [{"port": "70000"}, {"workers": "0"}, {"rate_limit": "-1"},
                                   {"log_level": "loud"}])
def test_invalid_settings_are_rejected(flags: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load(["gateway"], flags, {})


def test_unknown_store_is_rejected() -> None:
    with pytest.raises(SettingsError):
        load(["users"], {"store": "mysql://x"}, {})


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "chatsys"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "gateway" in result.stdout
