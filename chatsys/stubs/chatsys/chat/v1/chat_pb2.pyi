from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileRef(_message.Message):
    __slots__ = ("id", "name", "size", "content_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    size: int
    content_type: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "room", "user", "session", "ts", "text", "file")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    id: str
    room: str
    user: str
    session: str
    ts: int
    text: str
    file: FileRef
    def __init__(self, id: _Optional[str] = ..., room: _Optional[str] = ..., user: _Optional[str] = ..., session: _Optional[str] = ..., ts: _Optional[int] = ..., text: _Optional[str] = ..., file: _Optional[_Union[FileRef, _Mapping]] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("room", "user", "session", "event")
    class Event(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EVENT_UNSPECIFIED: _ClassVar[Presence.Event]
        EVENT_JOIN: _ClassVar[Presence.Event]
        EVENT_LEAVE: _ClassVar[Presence.Event]
    EVENT_UNSPECIFIED: Presence.Event
    EVENT_JOIN: Presence.Event
    EVENT_LEAVE: Presence.Event
    ROOM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    room: str
    user: str
    session: str
    event: Presence.Event
    def __init__(self, room: _Optional[str] = ..., user: _Optional[str] = ..., session: _Optional[str] = ..., event: _Optional[_Union[Presence.Event, str]] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: str
    def __init__(self, room: _Optional[str] = ...) -> None: ...

class RoomEvent(_message.Message):
    __slots__ = ("message", "presence", "subscribed")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    message: Message
    presence: Presence
    subscribed: Subscribed
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., presence: _Optional[_Union[Presence, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("room", "user", "session", "text", "file")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    room: str
    user: str
    session: str
    text: str
    file: FileRef
    def __init__(self, room: _Optional[str] = ..., user: _Optional[str] = ..., session: _Optional[str] = ..., text: _Optional[str] = ..., file: _Optional[_Union[FileRef, _Mapping]] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class AppendBatchRequest(_message.Message):
    __slots__ = ("appends",)
    APPENDS_FIELD_NUMBER: _ClassVar[int]
    appends: _containers.RepeatedCompositeFieldContainer[AppendRequest]
    def __init__(self, appends: _Optional[_Iterable[_Union[AppendRequest, _Mapping]]] = ...) -> None: ...

class AppendFailure(_message.Message):
    __slots__ = ("status", "detail")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: int
    detail: str
    def __init__(self, status: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class Stored(_message.Message):
    __slots__ = ("id", "ts")
    ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    id: str
    ts: int
    def __init__(self, id: _Optional[str] = ..., ts: _Optional[int] = ...) -> None: ...

class AppendOutcome(_message.Message):
    __slots__ = ("stored", "failure")
    STORED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    stored: Stored
    failure: AppendFailure
    def __init__(self, stored: _Optional[_Union[Stored, _Mapping]] = ..., failure: _Optional[_Union[AppendFailure, _Mapping]] = ...) -> None: ...

class AppendBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[AppendOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[AppendOutcome, _Mapping]]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("room", "since", "limit")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    room: str
    since: str
    limit: int
    def __init__(self, room: _Optional[str] = ..., since: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class PublishPresenceRequest(_message.Message):
    __slots__ = ("presence",)
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    presence: Presence
    def __init__(self, presence: _Optional[_Union[Presence, _Mapping]] = ...) -> None: ...

class PublishPresenceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishPresenceBatchRequest(_message.Message):
    __slots__ = ("presences",)
    PRESENCES_FIELD_NUMBER: _ClassVar[int]
    presences: _containers.RepeatedCompositeFieldContainer[Presence]
    def __init__(self, presences: _Optional[_Iterable[_Union[Presence, _Mapping]]] = ...) -> None: ...

class PublishPresenceBatchResponse(_message.Message):
    __slots__ = ("failures",)
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    failures: _containers.RepeatedCompositeFieldContainer[AppendFailure]
    def __init__(self, failures: _Optional[_Iterable[_Union[AppendFailure, _Mapping]]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("room", "since")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    room: str
    since: str
    def __init__(self, room: _Optional[str] = ..., since: _Optional[str] = ...) -> None: ...
