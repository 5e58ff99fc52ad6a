"""From decoded records to Parquet and dead-letter objects in S3.

Pure: ``mapping`` (lines -> canonical columns), ``partition`` (rows -> hive paths, guard),
``parquet`` (deterministic file bytes), ``plan`` (a flush -> named objects).
I/O: ``s3`` (uploads).
"""
