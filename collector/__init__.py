"""The collector: MQTT to InfluxDB, validation, dead letters, site registry, bulletin."""
