"""The operator's console: Prometheus metrics and a live web page, served by the daemon ([console] in the config)."""
