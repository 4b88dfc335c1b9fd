"""Head-office side: the sync API, its catalog, storage and CLI."""
