"""Postgres: migrations, lead state, the send ledger and campaign stats."""
