"""The probe agent: measures links, spools results durably and publishes them over MQTT."""
