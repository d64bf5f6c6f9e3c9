// The page's state: one object, read and changed by the socket, the forms and the renderer.

export const S = {
  user: "", room: "", wanted: false, // joined, and the socket should stay open
  ws: null, connected: false, welcomed: false,
  token: null, session: null, sessions: new Set(), // every session id this page has had
  lastId: null, seen: new Set(), own: [], claimed: new Set(),
  refs: 0, outbox: [], inflight: new Map(), // ref -> {frame, session}
  attempt: 0, retryTimer: null, retryAt: 0, pingTimer: null, pongTimer: null,
};

/** Joining a room starts over: nothing of the previous room's sessions, messages or frames. */
export function startOver(user, room) {
  Object.assign(S, {
    user, room, wanted: true, connected: false, welcomed: false,
    token: null, session: null, sessions: new Set(), lastId: null, seen: new Set(), own: [],
    claimed: new Set(), outbox: [], inflight: new Map(), attempt: 0, retryTimer: null,
  });
}
