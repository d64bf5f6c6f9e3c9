"""What every chatsys process shares: settings, logging, metrics, lifecycle, gRPC plumbing."""
