"""The agent's HTTP transport, one job per module: `client` (connections, per-origin pool,
TLS), `watchdog` (deadlines that cut a stalled peer), `body` (reading a body under a size
bound and a deadline, inflating, checksums), `retry` (backoff, Retry-After), `errors`."""
