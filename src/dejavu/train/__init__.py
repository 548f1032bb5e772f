"""SSL training: the loop, optimisers and schedules, checkpoints and resume."""
