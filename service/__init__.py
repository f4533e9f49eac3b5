"""The real-time anytime-prediction service: cameras, deadline engine, websocket and HTTP API."""
