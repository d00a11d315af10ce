"""Replication targets behind one interface (base.Target); one conformance suite runs on each
(tests/replication/)."""
