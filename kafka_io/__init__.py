"""Thin confluent-kafka helpers, no domain logic: admin (broker check, topics), the
publisher, read loops and consumer configs, ports. Used by producers, pipeline and infra."""
