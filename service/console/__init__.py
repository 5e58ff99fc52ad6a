"""The operator's console (DESIGN §13): shard view, dead letters, redrive; ``tideway status``."""
