"""Policy for the addresses callvault itself connects to (webhooks, S3-compatible endpoints)."""
