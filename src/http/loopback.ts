/**
 * Who may spend the keys: with PROXY_API_KEYS set, `/v1` and `/api/v1` need one of them as the
 * bearer (checked in routes/proxy.ts); without it any bearer is accepted, and `serve` refuses a
 * non-loopback HOST unless ALLOW_OPEN_PROXY=true.
 */

/** 127.0.0.0/8, ::1 and localhost: only this machine can reach them. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || /^127(\.\d{1,3}){3}$/.test(bare) || bare === "::ffff:127.0.0.1";
}
