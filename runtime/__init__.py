"""Clients and stores with no Temporal in them, usable from workers, the CLI and benches.

    db.py, store.py, org_store.py   PostgreSQL: the pool and schema, tasks, the org chart
    documents.py                    YAML/JSON files (plans, org charts, tools, prices)
    llm/                            the model client, tokens, context, prices, metered calls
    tools/                          function tools, MCP servers, the Toolbox over both
    sandbox/                        code sessions: bubblewrap locally, or E2B
    settings.py, deps.py            the environment, and what one worker process opens

Each raises plain exceptions, documented where they are defined; ``activities.boundary``
turns them into Temporal's ApplicationErrors.
"""
