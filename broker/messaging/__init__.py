"""Outgoing email and SMS through a transactional outbox."""
