"""HTTP and websocket routes, one router per concern."""
