"""chatsys: a real-time chat backend built from gRPC microservices."""

__version__ = "0.1.0"
