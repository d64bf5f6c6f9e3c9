"""The gateway's ``chatsys_*`` metrics, named as the contract fixes them (docs/contract.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from chatsys.runtime.metrics import histogram

WS_CONNECTIONS = Gauge("chatsys_ws_connections", "Open chat WebSocket connections.")
WS_CONNECT_SECONDS = histogram("chatsys_ws_connect_seconds",
                               "From the upgrade request to the welcome frame.")
# The parts of a join the gateway waits on, each observed once it succeeded.
# `session` runs beside `room_join` (and `history`, which only a resume with `since` has).
WS_CONNECT_STAGES = ("validate", "session", "room_join", "history", "accept", "welcome",
                     "presence")
WS_CONNECT_STAGE_SECONDS = histogram("chatsys_ws_connect_stage_seconds",
                                     "Each stage of a join, from validation to presence.",
                                     ("stage",))
# Upgrades this gateway refused on its own, before calling A (HTTP 503).
WS_REFUSAL_REASONS = ("draining", "max_connections", "max_pending_joins")
WS_REFUSED = Counter("chatsys_ws_refused_total",
                     "Upgrades refused with 503 before any call to A, by reason.", ("reason",))
MESSAGES = Counter("chatsys_messages_total", "Messages accepted from clients.", ("kind",))
MESSAGE_ACK_SECONDS = histogram("chatsys_message_ack_seconds",
                                "From a client's message frame to its ack.", ("kind",))
FANOUT_DELIVERIES = Counter("chatsys_fanout_deliveries_total",
                            "Frames queued to room members by the fan-out.")
HTTP_REQUEST_SECONDS = histogram("chatsys_http_request_seconds", "HTTP requests served.",
                                 ("route", "method", "status"))
FILE_BYTES = Counter("chatsys_file_bytes_total", "File bytes through the gateway.",
                     ("direction",))
WS_ERRORS = Counter("chatsys_ws_errors_total", "Error frames sent, by code.", ("code",))
WS_CLOSES = Counter("chatsys_ws_closes_total", "Connections the gateway closed, by code.",
                    ("code",))
SUBSCRIPTIONS = Gauge("chatsys_room_subscriptions", "Rooms with a live subscription to A.")
BATCH_SIZE = Histogram("chatsys_gateway_batch_size",
                       "Requests per batch call to A (coalescing under load), by method.",
                       ["method"], buckets=(1, 2, 4, 8, 16, 32, 64))
