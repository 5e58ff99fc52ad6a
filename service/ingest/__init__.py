"""HTTP ingest tier: body limits, auth, line parsing, group commit into Kinesis, the app."""
