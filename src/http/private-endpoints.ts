/**
 * Account and management endpoints a client must never reach with a pool key: they would show a
 * pool key's label, limit, usage and account (`/key`, `/auth/key`), its credits (`/credits`),
 * its activity, or manage keys (`/keys`, which answers 401 to a normal key: before 401s from
 * such paths stopped counting, five requests disabled the whole pool).
 *
 * Matched on the path below the API root, case-insensitively, with every sub-path. A path with
 * percent-escapes, backslashes or dot segments is decoded and resolved first, so `/KEYS/`,
 * `//keys`, `/%6beys`, `/chat%2f..%2fkeys` and `/x/%2e%2e/credits` are all caught; one that climbs
 * above the API root is refused too.
 */

/** The first segment below the API root that makes a path private. */
const privateRoots = new Set(["key", "keys", "credits", "activity"]);
/** Under `/auth/`: the key's own info and the key exchange. */
const privateUnderAuth = new Set(["key", "keys"]);

/** The list as the README and the error message give it. */
export const PRIVATE_ENDPOINTS = ["/key", "/auth/key", "/auth/keys", "/keys", "/credits", "/activity"] as const;

/**
 * The same list as one compiled pattern, for the usual path (no escapes, no dots): one regex test
 * costs a few ns, against 150 for slicing and lower-casing segments.
 */
const privatePlain = /^\/*(?:keys?|credits|activity|auth\/+keys?)(?:[/;]|$)/i;
/** What the plain pattern cannot judge: percent-escapes, backslashes, dot segments. */
const needsResolving = /[%\\]|\/\./;
const escapes = /%([0-9a-f]{2})/gi;

/** True when `apiPath` (e.g. `/keys/abc`, below `/v1` or `/api/v1`) must not be forwarded. */
export function isPrivateEndpoint(apiPath: string): boolean {
  if (needsResolving.test(apiPath)) return isPrivateSegments(resolvedSegments(apiPath));
  return privatePlain.test(apiPath);
}

function isPrivateSegments(segments: string[] | undefined): boolean {
  if (segments === undefined) return true;
  const first = segments[0] ?? "";
  if (privateRoots.has(first)) return true;
  return first === "auth" && privateUnderAuth.has(segments[1] ?? "");
}

/**
 * Percent-decoded (until nothing changes, so a double-encoded `%252e` is caught too), `\` read as
 * `/`, empty and `.` segments dropped, `..` resolved. Undefined when `..` climbs above the root.
 */
function resolvedSegments(apiPath: string): string[] | undefined {
  let path = apiPath;
  for (let round = 0; round < 4 && path.includes("%"); round++) {
    const decoded = path.replace(escapes, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (decoded === path) break;
    path = decoded;
  }
  const out: string[] = [];
  for (const raw of path.replaceAll("\\", "/").split("/")) {
    const params = raw.indexOf(";");
    const segment = (params === -1 ? raw : raw.slice(0, params)).trim().toLowerCase();
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      if (out.pop() === undefined) return undefined;
      continue;
    }
    out.push(segment);
  }
  return out;
}
