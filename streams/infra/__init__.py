"""Local services without Docker: a KRaft Kafka broker from Maven jars and a project-owned Postgres cluster."""
