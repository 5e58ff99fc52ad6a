"""From decoded records to Parquet and dead-letter objects in S3.

Pure: ``mapping`` (the field mapping, specified line by line), ``columns`` (the same mapping,
columnar: the hot path), ``partition`` (rows -> hive paths, guard), ``parquet``
(deterministic file bytes), ``plan`` (a flush -> named objects).
I/O: ``s3`` (uploads), ``glue`` (partition registration).
"""
