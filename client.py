"""The one way BeesTown's entry points reach Temporal: `await connect(settings)`.

    client = await connect(settings)        # worker.py, starter.py, the CLI
    ...
    except TemporalUnreachable as e:        # entry points print str(e) and exit 2

Every client speaks the pydantic data converter. Where and how to connect is loaded the
way the `temporal` CLI loads it (`temporalio.envconfig`): the profile named by
`TEMPORAL_PROFILE` (default `default`) of the TOML file `TEMPORAL_CONFIG_FILE` (default
`~/.config/temporalio/temporal.toml`), overridden by `TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*` and the rest of that family. So
a Temporal Cloud namespace (API key) or an mTLS cluster works with the settings people
already have. An address or namespace set on `Settings` itself (environment or code) wins
over the profile; with neither, `localhost:7233` and `default`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from typing import NoReturn

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig, ClientConnectConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from runtime.settings import Settings
from workflows.search import KEYS

__all__ = ["CONNECT_TIMEOUT_S", "TemporalUnreachable", "connect", "connect_config",
           "ensure_search_attributes", "exit_now"]

log = logging.getLogger(__name__)

# A refused port fails in well under a second; a silent address (firewall, wrong host)
# would otherwise hang the caller, so give up after this long and say where we tried.
CONNECT_TIMEOUT_S = 15.0


class TemporalUnreachable(Exception):
    """No Temporal server answered at the configured address; `str()` is one line for people."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach Temporal at {address}: {reason}. "
                         "Start it (see README) or set TEMPORAL_ADDRESS.")
        self.address = address
        self.reason = reason


def connect_config(settings: Settings) -> ClientConnectConfig:
    """Return where and how to connect, as `Client.connect` keyword arguments (address,
    namespace, and from the profile or environment: API key, TLS, gRPC metadata).

    Raises:
        TemporalUnreachable: the profile or its TLS files cannot be read (one line).
    """
    try:
        config = ClientConfig.load_client_connect_config()
    except (OSError, ValueError) as e:  # a missing or malformed profile or TLS file
        raise TemporalUnreachable(settings.temporal_address,
                                  f"its connection profile cannot be loaded: {e}") from e
    explicit = settings.model_fields_set
    if "temporal_address" in explicit or "target_host" not in config:
        config["target_host"] = settings.temporal_address
    if "temporal_namespace" in explicit or "namespace" not in config:
        config["namespace"] = settings.temporal_namespace
    return config


async def connect(settings: Settings, *, timeout_s: float = CONNECT_TIMEOUT_S,
                  runtime: Runtime | None = None, identity: str | None = None) -> Client:
    """Return a Temporal client on the configured server, speaking pydantic.

    `runtime` (the worker's, serving metrics) runs the client and its workers; None: the
    SDK's default runtime. `identity` names this process to the server (a worker's names
    its host and pid, so its peers can tell when it died); None: the SDK's default.

    Raises:
        TemporalUnreachable: the server refused, or did not answer within `timeout_s`.
    """
    config = connect_config(settings)
    address = config.get("target_host", settings.temporal_address)
    try:
        return await asyncio.wait_for(
            Client.connect(**config, data_converter=pydantic_data_converter,
                           runtime=runtime, identity=identity),
            timeout=timeout_s)
    except TimeoutError as e:
        raise TemporalUnreachable(address, f"no answer within {timeout_s:g} s") from e
    except RuntimeError as e:  # the core SDK reports every transport failure as one
        raise TemporalUnreachable(address, _first_line(e)) from e


async def ensure_search_attributes(client: Client, settings: Settings) -> bool:
    """Return whether BeesTown's search attributes exist in the namespace, adding them if
    missing and allowed (a dev server allows it; a production server may not)."""
    ns = settings.temporal_namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=ns))
        have = set(listed.custom_attributes) | set(listed.system_attributes)
        missing = [k.name for k in KEYS if k.name not in have]
        if missing:
            await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
                namespace=ns, search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing}))
            log.info("registered search attributes %s in namespace %s", ", ".join(missing), ns)
    except RPCError as e:
        log.warning("BeesTown's search attributes (%s) are not registered in namespace %s "
                    "and could not be added (%s): workflows run without them. Register "
                    "them: temporal operator search-attribute create --name NAME --type "
                    "Keyword", ", ".join(k.name for k in KEYS), ns, e.message)
        return False
    return True


def _first_line(e: BaseException) -> str:
    """The operating system's words when the core SDK quotes them, else its first line."""
    text = str(e) or type(e).__name__
    if quoted := re.search(r'message: "([^"]+)"', text):
        return quoted.group(1)  # e.g. "Connection refused"
    return text.splitlines()[0].removeprefix("Failed client connect: ")


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once stdout and stderr are flushed, skipping finalization.

    The core SDK's native threads can race interpreter finalization and abort the process
    (seen as rc 134 after a correct run, and after a refused connect), so entry points that
    made a client leave through here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
