"""UserService's methods on upb messages, for the gateway's calls (a join's session is on every
join's path; see :mod:`chatsys.runtime.upb`). The messages are ``users_pb2``'s; A serves the same
wire format from betterproto2's servicer.
"""

from __future__ import annotations

from chatsys.runtime.upb import Method
from chatsys.stubs.chatsys.users.v1 import users_pb2

SERVICE = users_pb2.DESCRIPTOR.services_by_name["UserService"]
CREATE_SESSION = Method.of(SERVICE, "CreateSession")
CREATE_SESSIONS = Method.of(SERVICE, "CreateSessions")
AUTHENTICATE = Method.of(SERVICE, "Authenticate")
END_SESSION = Method.of(SERVICE, "EndSession")
END_SESSIONS = Method.of(SERVICE, "EndSessions")
