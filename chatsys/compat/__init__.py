"""Where chatsys depends on a library's private names: one module per library.

Each module states the versions it was written against (pyproject.toml bounds them) and has a
test that fails when the library changes what it relies on.
"""
