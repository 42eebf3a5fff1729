"""The ingest pipeline: MQTT -> validate -> enrich -> InfluxDB, dead letters,
self-metrics."""
