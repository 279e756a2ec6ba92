"""Per-repository state that follows every commit: the SQLite store (commits, chunks, vectors,
states, adapters) and the evolving GRU state."""
