"""How a worker process lives on its host, with Temporal in view: a supervisor that forks a
new worker at once when one dies, taking back the work of this host's dead processes,
shutting down by handing in-flight attempts back, heartbeating for activities that only
wait, and a pool that rides out a PostgreSQL outage while heartbeating.

    lifecycle.py      serve_workers (drain on SIGTERM), supervise, take-back sweeper
    interceptors.py   AutoHeartbeat; WorkerShutdown with a short retry delay
    outage.py         riding(pool): store calls wait out refused/dropped connections

Used by `worker.py` (and the chaos bench); `runtime/` stays free of Temporal.
"""
