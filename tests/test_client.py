"""client.connect: every entry point reaches Temporal one way and says so when it cannot."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import TLSConfig

from client import TemporalUnreachable, connect, connect_config
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "127.0.0.1:1"  # a port nothing listens on: refused at once


async def test_connect_to_nowhere_raises_one_named_error() -> None:
    with pytest.raises(TemporalUnreachable) as caught:
        await connect(Settings(temporal_address=NOWHERE))
    assert caught.value.address == NOWHERE
    assert str(caught.value).startswith(f"cannot reach Temporal at {NOWHERE}: ")
    assert "\n" not in str(caught.value)
    assert "tonic" not in str(caught.value)  # the transport's internals stay out


@pytest.mark.parametrize("command", [
    ["worker.py"],
    ["starter.py", "--plan", "examples/demo.yaml"],
    ["-m", "cli", "cancel", "some-task"],
])
async def test_entry_points_report_an_unreachable_temporal_in_one_line_and_exit_2(
    command: list[str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    env["TEMPORAL_ADDRESS"] = NOWHERE
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = (out + err).decode()
    assert proc.returncode == 2, text
    assert f"cannot reach Temporal at {NOWHERE}" in text
    assert "Traceback" not in text
    [line] = [ln for ln in err.decode().splitlines() if "Temporal" in ln]
    assert NOWHERE in line


def _profiles(tmp: Path, text: str, monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """Point the `temporal` CLI's profile loading at a file of our own, as a person would."""
    path = tmp / "temporal.toml"
    path.write_text(text)
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    monkeypatch.setenv("TEMPORAL_PROFILE", profile)


async def test_a_temporal_cli_profile_connects_every_entry_point(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = client.service_client.config.target_host
    _profiles(tmp_path, f'[profile.dev]\naddress = "{address}"\nnamespace = "default"\n'
                        '[profile.default]\naddress = "127.0.0.1:1"\n',
              monkeypatch, "dev")
    settings = Settings()  # nothing set in the environment but the profile
    assert connect_config(settings)["target_host"] == address
    connected = await connect(settings)
    assert connected.namespace == "default"
    await connected.count_workflows()  # a real call to the dev server
    # The same profile reaches the CLI as a separate process.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "cancel", "no-such-task", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert "cannot reach Temporal" not in out.decode(), out.decode()


def test_tls_and_api_key_of_a_profile_reach_the_connect_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    _profiles(tmp_path, '[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\n'
                        'namespace = "ns.acct"\napi_key = "s3cret"\n'
                        f'[profile.cloud.tls]\nserver_name = "ns.acct.tmprl.cloud"\n'
                        f'server_ca_cert_path = "{ca}"\n', monkeypatch, "cloud")
    config = connect_config(Settings())
    assert config["target_host"] == "ns.acct.tmprl.cloud:7233"
    assert config["namespace"] == "ns.acct"
    assert config["api_key"] == "s3cret"
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.domain == "ns.acct.tmprl.cloud"
    assert tls.server_root_ca_cert == ca.read_bytes()
    # The environment overrides the profile, as for the `temporal` CLI...
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "other")
    assert connect_config(Settings())["namespace"] == "other"
    # ...and so does an address given to BeesTown itself.
    assert connect_config(Settings(temporal_address="h:1"))["target_host"] == "h:1"


def test_an_unreadable_profile_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _profiles(tmp_path, '[profile.x]\naddress = "h:1"\n[profile.x.tls]\n'
                        f'client_cert_path = "{tmp_path}/missing.pem"\n'
                        f'client_key_path = "{tmp_path}/missing.key"\n', monkeypatch, "x")
    with pytest.raises(TemporalUnreachable) as caught:
        connect_config(Settings())
    assert "missing.pem" in str(caught.value)
    assert "\n" not in str(caught.value)
