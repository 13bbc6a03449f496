/** The request id every response carries: the caller's own when it is safe to echo, else a new one. */

const safeClientId = /^[A-Za-z0-9._:-]{1,128}$/;

export function requestIdFor(headers: Headers): string {
  const given = headers.get("x-request-id");
  return given && safeClientId.test(given) ? given : crypto.randomUUID();
}
