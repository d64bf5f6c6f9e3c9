"""Module A, part 2: durable ordered room history and the live event stream (ChatService)."""
