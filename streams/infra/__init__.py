"""Local services without Docker.

A KRaft Kafka broker from Maven jars, and a project-owned Postgres cluster.
"""
