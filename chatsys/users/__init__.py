"""Module A, part 1: sessions and their bearer tokens (UserService)."""
