"""Grafana dashboards, data source and alert provisioning, generated from code."""
