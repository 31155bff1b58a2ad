"""The one settings object, read from the environment by worker, starter and CLI.

Workflows never read it: whatever they need arrives in an input or an activity result.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "beestown"


class Settings(BaseSettings):
    """Everything BeesTown reads from its environment, with the defaults of a first run."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    temporal_address: str = Field("localhost:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    temporal_ui_url: str = Field("http://localhost:8233", validation_alias="BEESTOWN_UI_URL")
    task_queue: str = Field("beestown", validation_alias="BEESTOWN_TASK_QUEUE")
    # Activities are routed by kind so sandbox hosts and LLM callers can scale apart.
    # Empty means "the main task queue": one worker serves everything.
    llm_task_queue: str = Field("", validation_alias="BEESTOWN_LLM_TASK_QUEUE")
    sandbox_task_queue: str = Field("", validation_alias="BEESTOWN_SANDBOX_TASK_QUEUE")
    tool_task_queue: str = Field("", validation_alias="BEESTOWN_TOOL_TASK_QUEUE")
    # Which kinds of work this worker process serves (comma separated subset of
    # "workflows,llm,sandbox,tools"); the default serves all of them.
    worker_roles: str = Field(
        "workflows,llm,sandbox,tools", validation_alias="BEESTOWN_WORKER_ROLES"
    )
    # Run the worker in a forked child of a supervising process that forks a new one at
    # once when it is killed (hosting/lifecycle.py); off: one process.
    supervise: bool = Field(True, validation_alias="BEESTOWN_SUPERVISE")
    # Take back the work of this host's dead worker processes at once (fail their
    # attempts, release their sticky queues); off: only the timeouts notice them.
    take_back: bool = Field(True, validation_alias="BEESTOWN_TAKE_BACK")
    # On SIGTERM/SIGINT (a deploy, a stop), seconds the running activities are given to
    # finish before they are handed back to Temporal for another worker (a step that
    # finishes in time is not run again; a model turn is not paid for twice); 0: hand
    # everything back at once; a second signal ends the grace. Keep it under your
    # orchestrator's kill timeout (docker
    # stop: 10 s, Kubernetes: 30 s). Measured in bench/chaos.py (hosting/lifecycle.py).
    shutdown_grace_s: float = Field(5.0, ge=0, le=600,
                                    validation_alias="BEESTOWN_SHUTDOWN_GRACE")
    # Run workflow code inside Temporal's determinism sandbox. Off by default for speed
    # (see bench/dag.py); the tests turn it on to catch non-deterministic workflow code.
    workflow_sandbox: bool = Field(False, validation_alias="BEESTOWN_WORKFLOW_SANDBOX")

    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    state_dir: Path = Field(
        default_factory=_default_state_dir, validation_alias="BEESTOWN_STATE_DIR"
    )

    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    model: str = Field("gpt-4o-mini", validation_alias=AliasChoices("BEESTOWN_MODEL"))
    llm_timeout_s: float = Field(120.0, gt=0, validation_alias="BEESTOWN_LLM_TIMEOUT")
    max_plan_steps: int = Field(50, ge=1, le=1000, validation_alias="BEESTOWN_MAX_PLAN_STEPS")
    max_turns: int = Field(12, ge=1, le=200, validation_alias="BEESTOWN_MAX_TURNS")
    # The organization: an org chart file loaded into PostgreSQL at worker start.
    org_file: Path | None = Field(None, validation_alias="BEESTOWN_ORG_FILE")
    # Use the org chart kept in PostgreSQL: unset, each task uses the chart stored when it
    # starts (`beestown org load` takes effect without a restart); 0 never, 1 always.
    org_enabled: bool | None = Field(None, validation_alias="BEESTOWN_ORG")
    review_rounds: int = Field(2, ge=0, le=20, validation_alias="BEESTOWN_REVIEW_ROUNDS")
    escalation_timeout_s: float = Field(
        3600.0, gt=0, validation_alias="BEESTOWN_ESCALATION_TIMEOUT"
    )
    max_depth: int = Field(2, ge=0, le=5, validation_alias="BEESTOWN_MAX_DEPTH")

    # Prometheus /metrics of this worker (the Temporal SDK's and BeesTown's own) on this
    # port of `metrics_host`; 0: off.
    metrics_port: int = Field(0, ge=0, le=65535, validation_alias="BEESTOWN_METRICS_PORT")
    metrics_host: str = Field("127.0.0.1", validation_alias="BEESTOWN_METRICS_HOST")

    e2b_api_key: SecretStr | None = Field(None, validation_alias="E2B_API_KEY")
    sandbox_backend: str = Field("auto", validation_alias="BEESTOWN_SANDBOX")

    @field_validator("sandbox_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in {"auto", "local", "e2b"}:
            raise ValueError(f"BEESTOWN_SANDBOX must be auto, local or e2b, not {v!r}")
        return v

    @field_validator("worker_roles")
    @classmethod
    def _known_roles(cls, v: str) -> str:
        roles = {r.strip() for r in v.split(",") if r.strip()}
        unknown = roles - {"workflows", "llm", "sandbox", "tools"}
        if unknown or not roles:
            raise ValueError(
                f"BEESTOWN_WORKER_ROLES must name workflows, llm, sandbox or tools, got {v!r}"
            )
        return ",".join(sorted(roles))

    @property
    def roles(self) -> set[str]:
        return set(self.worker_roles.split(","))

    def queue_for(self, kind: str) -> str:
        """Return the task queue that serves activities of `kind` (llm, sandbox or tools)."""
        specific = {
            "llm": self.llm_task_queue,
            # Code steps always get a queue of their own, so the sandbox limit below is
            # applied by Temporal (the rest wait there, not in a worker).
            "sandbox": self.sandbox_task_queue or f"{self.task_queue}-sandbox",
            "tools": self.tool_task_queue,
        }[kind]
        return specific or self.task_queue

    @property
    def uses_org(self) -> bool:
        """Whether tasks may use a stored org chart (each checks at its start)."""
        return self.org_enabled is not False or self.org_file is not None

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_base_url or self.openai_api_key)

    # --- sandbox ---
    # Interpreter of local sandbox sessions; default: the env that
    # `python -m runtime.sandbox.setup` installs, else /usr/bin/python3.
    sandbox_python: Path | None = Field(None, validation_alias="BEESTOWN_SANDBOX_PYTHON")
    sandbox_bwrap: str | None = Field(None, validation_alias="BEESTOWN_SANDBOX_BWRAP")
    # A code step's stdout / stderr past 1,000,000 bytes keeps its head and tail inline;
    # the whole stream (and any output that is not UTF-8) is kept as an artifact up to
    # this many MiB per stream (0: never).
    output_artifact_mb: int = Field(
        32, ge=0, le=1024, validation_alias="BEESTOWN_OUTPUT_ARTIFACT_MB")
    # Sandbox sessions this worker runs at once (default: 4 per CPU, and never more than
    # 75 % of the host's memory holds; runtime/capacity.py).
    max_sandboxes: int | None = Field(None, ge=1, le=1000,
                                      validation_alias="BEESTOWN_MAX_SANDBOXES")

    # --- tokens ---
    # YAML or JSON: model -> {input, output} in USD per 1M tokens, over the defaults of
    # activities.tokens.DEFAULT_PRICES.
    price_table_file: Path | None = Field(None, validation_alias="BEESTOWN_PRICES_FILE")
    # Token budgets (prompt + completion); unset means unlimited.
    task_token_budget: int | None = Field(
        None, ge=1, validation_alias="BEESTOWN_TASK_TOKEN_BUDGET"
    )
    subtask_token_budget: int | None = Field(
        None, ge=1, validation_alias="BEESTOWN_SUBTASK_TOKEN_BUDGET"
    )
    # Context window of the model in tokens, over activities.tokens' table (which knows
    # only common models, and not a local server started with a smaller window).
    context_limit: int | None = Field(None, ge=1, validation_alias="BEESTOWN_CONTEXT_LIMIT")

    # --- tools ---
    # YAML/JSON file whose `tools` section lists the MCP servers this worker registers
    # (see models/tools.py); none: function tools only.
    tools_file: Path | None = Field(None, validation_alias="BEESTOWN_TOOLS_FILE")

    # --- workspace ---
    # The directory tasks' related files are read from (and the `read_file` tool reads);
    # nothing outside it is read. None: related files are not read.
    workspace_root: Path | None = Field(None, validation_alias="BEESTOWN_WORKSPACE")
    # Bytes of one file read into an agent's context or returned by `read_file`.
    workspace_file_limit: int = Field(
        65_536, ge=1, le=10_000_000, validation_alias="BEESTOWN_WORKSPACE_FILE_LIMIT")
