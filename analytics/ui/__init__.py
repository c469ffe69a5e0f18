"""The web UI: static pages served by the analytics app, talking to its REST API."""
