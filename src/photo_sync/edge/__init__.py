"""Store side: the agent that keeps the store's PostgreSQL holding every photo."""
