/**
 * The client counters as several instances share them (with REDIS_URL: store/redis/
 * client-counters.ts). The gate asks it only for clients with a limit; a client without one is
 * counted in memory and its increments sent on without waiting, so it never pays a round-trip.
 */
import type { ClientRecord } from "./client-schema.ts";
import type { ClientLimits, Held, Refusal } from "./usage-windows.ts";

export interface SharedClientCounters {
  /**
   * For a client with a limit: checks every limit against the shared counts, `held` (the request's
   * reservation) included, and if it fits counts the request and holds `held`, in one atomic step;
   * the counts in memory are updated to the shared ones. When the shared store cannot answer,
   * decides from memory (fail open) and counts there.
   */
  reserve(record: ClientRecord, at: number, held: Held): Promise<Refusal | undefined>;
  /** A request admitted from memory (a client without limits): its increment, sent without waiting. */
  counted(record: ClientRecord, at: number): void;
  /** A request admitted at `heldAt` ended: `held` released, `charged` added (one step), sent without waiting. */
  settled(record: ClientRecord, held: Held, heldAt: number, charged: Held, at: number): void;
  stop(): Promise<void>;
}

/** Whether a client has a limit the shared counts decide (else it never waits on the store). */
export function hasLimits(limits: ClientLimits): boolean {
  return limits.rpm !== undefined || limits.rpd !== undefined || limits.tpm !== undefined || limits.usdPerDay !== undefined || limits.usdPerMonth !== undefined;
}
