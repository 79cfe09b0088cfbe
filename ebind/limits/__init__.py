"""Cluster-wide limits on when a task may run, kept in NATS KV."""
