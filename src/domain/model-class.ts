/**
 * Which requests a limit applies to. OpenRouter counts free models (`:free`, and the
 * `openrouter/free` router) apart from paid ones (docs/openrouter.md, "Rate limits"), so the
 * proxy's rests and budgets are kept per class. A leaf: imports nothing from the project.
 */
export type ModelClass = "free" | "paid";
/** Which requests a rest applies to: every model, free (`:free`) models only, or paid ones only. */
export type RestClass = "all" | ModelClass;

export const classOfModel = (model: string | undefined): ModelClass =>
  model !== undefined && (model.endsWith(":free") || model === "openrouter/free") ? "free" : "paid";

/**
 * Why something rests, in OpenRouter's terms; a person's `enable-key` clears every cause but a
 * known daily limit (keys/rests.ts `clearableByPerson`). Older files have no cause: read as "rate-limit".
 */
export const RestCauses = ["free-per-day", "free-per-min", "provider", "rate-limit", "in-flight", "credits", "negative-balance", "key-limit", "workspace-budget", "guardrail-budget", "privacy"] as const;
export type RestCause = (typeof RestCauses)[number];
