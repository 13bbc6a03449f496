import { describe, expect, test } from "bun:test";
import { isoTime, utcDay } from "../src/domain/time-text.ts";

describe("time text", () => {
  test("isoTime says what Date#toISOString says, across seconds, days, fractions and years", () => {
    const samples = [0, 1, 999, 1000, 1001, 59_999, 86_399_999, 86_400_000, 951_782_400_000, 1_795_600_000_123.75, 253_402_300_799_999];
    let at = 1_795_600_000_000;
    for (let index = 0; index < 5000; index++) samples.push((at += (index * 7919) % 3001) + (index % 3) / 3);
    for (const ms of samples) expect(isoTime(ms)).toBe(new Date(ms).toISOString());
  });

  test("isoTime outside 1970..9999 still says what Date#toISOString says", () => {
    for (const ms of [-1, -86_400_000.5, 253_402_300_800_000]) expect(isoTime(ms)).toBe(new Date(ms).toISOString());
  });

  test("utcDay is the day of toISOString, also when calls go back and forth across midnight", () => {
    const midnight = 1_795_651_200_000; // 2026-11-26T00:00:00Z
    for (const ms of [midnight - 1, midnight, midnight - 1, midnight + 86_399_999, midnight + 86_400_000, 0]) {
      expect(utcDay(ms)).toBe(new Date(ms).toISOString().slice(0, 10));
    }
  });
});
