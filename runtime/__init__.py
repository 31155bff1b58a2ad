"""What a worker process runs on: its lifecycle (start, drain, stop)."""
