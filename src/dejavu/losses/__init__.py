"""SSL losses: each a pure function of two embedding batches."""
