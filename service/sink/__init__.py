"""From decoded records to Parquet and dead-letter objects in S3.

Pure: ``rules`` (the mapping rules, one place), ``build`` (the one entry point: native ->
columnar -> reference), ``mapping`` (the reference, line by line), ``columns`` and
``keyplan`` (columnar), ``native`` (the C scanner), ``event_time``, ``lineage``,
``partition`` (rows -> hive paths, guard), ``parquet`` (deterministic file bytes), ``plan``
(a flush -> named objects). I/O: ``s3`` (uploads), ``glue`` (partition registration).
Imports run one way: rules <- {mapping, keyplan, event_time, native} <- columns <- build <- plan.
"""
