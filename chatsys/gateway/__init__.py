"""Module P: the WebSocket/HTTP gateway in front of modules A and B."""
