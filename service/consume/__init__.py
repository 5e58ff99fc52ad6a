"""Kinesis -> S3 consumer, cut along the Kinesis Client Library's seams.

Pure: ``sequence`` (int sequence numbers, Sentinel checkpoints), ``discovery`` (ShardInfo,
parents-first readiness, initial checkpoints), ``liveness`` (heartbeat counters judged on the
observer's clock), ``assign`` (rendezvous assignment), ``buffer`` (decoded records, flush
triggers). I/O: ``leases`` (the DynamoDB lease table), ``taker`` (LeaseTaker), ``renewer``
(LeaseRenewer: the heartbeat task), ``reader`` (ListShards, GetRecords), ``budget`` (the
worker's memory budget), ``shard`` (one shard: replay, read, flush protocol), ``worker``
(the coordinator loop), ``context`` (settings -> ShardContext), ``status`` (HTTP port),
``runner`` (``tideway consume``).
"""
