"""Parley's monitoring mixin: Prometheus rules and Grafana dashboards generated from code.

``python deploy/generate.py`` writes the YAML and JSON under deploy/; a test fails when
the committed files differ from what this code generates.
"""
