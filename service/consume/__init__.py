"""Kinesis -> S3 consumer: leases (DynamoDB I/O), assignment (pure), shard reader, flush protocol."""
