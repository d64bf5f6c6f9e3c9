"""The gateway's gRPC clients: one per service of A and B, over one retrying caller each."""
