// Contract rules the page checks before it asks the server (docs/protocol.md).

const USER_RE = /^[\p{L}\p{Nd} ._-]+$/u;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

export function nameProblem(value) {
  if (!value) return "Enter a name.";
  if ([...value].length > 32) return "A name has at most 32 characters.";
  if (!USER_RE.test(value)) return "A name may contain only letters, digits, space, '.', '_' and '-'.";
  if (!value.trim()) return "A name must not be blank.";
  return null;
}

export function roomProblem(value) {
  if (!value) return "Enter a room.";
  if (!ROOM_RE.test(value)) return "A room has 1–64 letters, digits, '_' or '-'.";
  return null;
}

/** Message ids sort in room order: "0000000042" or "1700000000000-3" (compare numerically). */
export function compareIds(a, b) {
  const [ah, at = "0"] = a.split("-");
  const [bh, bt = "0"] = b.split("-");
  return compareDigits(ah, bh) || compareDigits(at, bt);
}

function compareDigits(a, b) {
  const x = a.replace(/^0+/, "");
  const y = b.replace(/^0+/, "");
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}
