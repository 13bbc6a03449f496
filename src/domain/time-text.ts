/**
 * Epoch milliseconds as ISO 8601 text (`2026-11-25T10:00:00.123Z`) and UTC day (`2026-11-25`),
 * with the slow part (`Date#toISOString`) done once per second, not per call: every request
 * writes a few of these, and at tens of thousands a second the formatting showed in profiles.
 * Same output as `new Date(ms).toISOString()` for any time between the years 1970 and 9999.
 */

let cachedSecond = Number.NaN;
/** `2026-11-25T10:00:00.` for `cachedSecond`. */
let cachedPrefix = "";

export function isoTime(ms: number): string {
  const whole = Math.floor(ms);
  const second = Math.floor(whole / 1000);
  if (second !== cachedSecond) {
    if (!(whole >= 0 && whole < 253_402_300_800_000)) return new Date(ms).toISOString(); // outside 1970..9999: say it as Date does
    cachedSecond = second;
    cachedPrefix = new Date(second * 1000).toISOString().slice(0, 20);
  }
  const millis = whole - second * 1000;
  return `${cachedPrefix}${millis < 10 ? "00" : millis < 100 ? "0" : ""}${millis}Z`;
}

const DAY_MS = 86_400_000;
let cachedDay = Number.NaN;
let cachedDayText = "";

/** The UTC day `ms` falls on, `YYYY-MM-DD`. */
export function utcDay(ms: number): string {
  const day = Math.floor(ms / DAY_MS);
  if (day !== cachedDay) {
    cachedDay = day;
    cachedDayText = new Date(day * DAY_MS).toISOString().slice(0, 10);
  }
  return cachedDayText;
}

/** The next 00:00 UTC after `ms`: when OpenRouter's daily free-model counts start again. */
export const nextUtcMidnight = (ms: number): number => (Math.floor(ms / DAY_MS) + 1) * DAY_MS;
