"""Running a model: call plans and hooks, folding, sampling, the decode loop, runners and the engine."""
