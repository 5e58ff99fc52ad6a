"""Tideway: logs over HTTP into Kinesis, exactly once into partitioned Parquet on S3."""
