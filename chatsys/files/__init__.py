"""Module B: durable file storage (FileService)."""
