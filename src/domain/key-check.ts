/**
 * What `GET /key` says about one key (docs/openrouter.md, "GET /key"), and the three ways a check
 * can end. upstream/key-info.ts asks; the key list and the account refresh (src/keys) read the
 * answer: a leaf, so neither side imports the other.
 */
import { z } from "zod";

export const KeyInfoSchema = z.looseObject({
  data: z.looseObject({
    label: z.string().nullish(),
    limit: z.number().nullish(),
    limit_remaining: z.number().nullish(),
    /** When the key's own cap resets: "daily", "weekly", "monthly", or null (never). */
    limit_reset: z.string().nullish(),
    usage: z.number().nullish(),
    usage_daily: z.number().nullish(),
    is_free_tier: z.boolean().nullish(),
    creator_user_id: z.string().nullish(),
    rate_limit: z.looseObject({ requests: z.number().nullish(), interval: z.string().nullish() }).nullish(),
    free_model_daily_requests: z
      .looseObject({ used: z.number().nullish(), limit: z.number().nullish(), remaining: z.number().nullish() })
      .nullish(),
  }),
});

export type KeyInfo = z.infer<typeof KeyInfoSchema>["data"];

export type KeyCheck =
  | { kind: "valid"; info: KeyInfo }
  | { kind: "rejected"; status: number; message: string }
  | { kind: "unknown"; reason: string };

