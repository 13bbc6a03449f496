/**
 * What a person may set on a client, from the CLI's flags or the admin API's JSON, checked by one
 * schema so both say the same thing about a bad value. `null` lifts a limit (`--no-rpm`,
 * `{"rpm": null}`); an absent field leaves it as it is.
 */
import { z } from "zod";
import { parseModelPatterns } from "./model-globs.ts";

/** ISO 8601 date or date-time; a bare date means 00:00 UTC that day (the key stops working when the day begins). */
const isoDateTime = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

const positiveInteger = (what: string) => z.number({ error: `${what} must be a whole number of at least 1` }).int(`${what} must be a whole number of at least 1`).min(1, `${what} must be a whole number of at least 1`).nullable().optional();
const dollars = (what: string) => z.number({ error: `${what} must be an amount in USD above 0` }).positive(`${what} must be an amount in USD above 0`).max(1e9).nullable().optional();

export const ClientSettingsSchema = z.strictObject({
  models: z
    .union([z.string(), z.array(z.string())], { error: 'models must be a list of patterns, like ["openai/*","*:free"] or "openai/*,*:free"' })
    .transform((value, context) => {
      const parsed = parseModelPatterns(Array.isArray(value) ? value.join(",") : value);
      if (!parsed.ok) {
        context.addIssue({ code: "custom", message: parsed.message });
        return z.NEVER;
      }
      return parsed.patterns;
    })
    .nullable()
    .optional(),
  rpm: positiveInteger("rpm"),
  rpd: positiveInteger("rpd"),
  tpm: positiveInteger("tpm"),
  usdPerDay: dollars("usdPerDay"),
  usdPerMonth: dollars("usdPerMonth"),
  expires: z
    .string({ error: "expires must be an ISO date, like 2027-01-31 or 2027-01-31T18:00:00Z" })
    .refine((text) => isoDateTime.test(text) && !Number.isNaN(Date.parse(text)), "expires must be an ISO date, like 2027-01-31 or 2027-01-31T18:00:00Z")
    .transform((text) => Date.parse(/T/.test(text) ? text : `${text}T00:00:00Z`))
    .nullable()
    .optional(),
});

export type ClientSettings = z.output<typeof ClientSettingsSchema>;
export type ClientSettingName = keyof ClientSettings;

export const clientSettingNames = Object.keys(ClientSettingsSchema.shape) as ClientSettingName[];

/** `usdPerDay` → `--usd-per-day`, for messages on the command line. */
export const flagOf = (name: string) => `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;

export type SettingsResult = { ok: true; settings: ClientSettings } | { ok: false; field: string; message: string };

export function parseClientSettings(input: unknown): SettingsResult {
  const parsed = ClientSettingsSchema.safeParse(input);
  if (parsed.success) return { ok: true, settings: parsed.data };
  const issue = parsed.error.issues[0];
  if (issue?.code === "unrecognized_keys") {
    return { ok: false, field: issue.keys.join(", "), message: `unknown field ${issue.keys.join(", ")}: the fields are ${clientSettingNames.join(", ")}` };
  }
  return { ok: false, field: String(issue?.path[0] ?? "body"), message: issue?.message ?? "invalid" };
}
