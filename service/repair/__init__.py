"""The repair tools an on-call engineer reaches for: ``tideway redrive`` (dead letters that
now decode land in the table, exactly once) and ``tideway replay`` (a time window of the
stream re-read into a side prefix, exactly once, apart from the live consumer)."""
