"""ChatService's methods on upb messages, for both ends: the gateway calls them, A serves them.

See :mod:`chatsys.runtime.upb`; the messages are ``chat_pb2``'s.
"""

from __future__ import annotations

from chatsys.runtime.upb import Method
from chatsys.stubs.chatsys.chat.v1 import chat_pb2

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
APPEND = Method.of(SERVICE, "Append")
APPEND_BATCH = Method.of(SERVICE, "AppendBatch")
HISTORY = Method.of(SERVICE, "History")
PUBLISH_PRESENCE = Method.of(SERVICE, "PublishPresence")
PUBLISH_PRESENCE_BATCH = Method.of(SERVICE, "PublishPresenceBatch")
SUBSCRIBE = Method.of(SERVICE, "Subscribe")
