"""hatinh-netmon: the shared core (wire contract, InfluxDB schema) used by agent and collector."""

__version__ = "0.1.0"
