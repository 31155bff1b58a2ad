"""How a worker process lives on its host, with Temporal in view: a supervisor that forks a
new worker at once when one dies, taking back the work of this host's dead processes,
shutting down by letting running attempts finish within a grace and handing the rest back,
heartbeating for activities that only wait, loading deferred SDKs once it serves, and a
pool that rides out a PostgreSQL outage while heartbeating.

    lifecycle.py      run_until_stopped (grace, then hand back), supervise, take-back sweeper
    interceptors.py   AutoHeartbeat; WorkerShutdown with a short retry delay
    outage.py         riding(pool): store calls wait out refused/dropped connections
    warmup.py         warm_up / load_now: the OpenAI and MCP SDKs left out of `import worker`

Used by `worker.py` (and the chaos bench); `runtime/` stays free of Temporal.
"""
