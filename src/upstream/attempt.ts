/**
 * One attempt: a key leased for one upstream request, and what must be undone when that request
 * is over — the listener on the client's signal, the silence watch, the entry in the shutdown's
 * set of attempts in flight. The attempt object is itself the abort listener (`handleEvent`), the
 * silence handler (`onSilence`) and the relay's end handler (`relayEnded`): no closures per attempt.
 */
import type { LiveSet, Slotted } from "../domain/live-set.ts";
import type { ChunkReader } from "../domain/redact.ts";
import type { KeyLease } from "../keys/key-pool.ts";
import type { ErrorBodyFacts } from "./policy.ts";
import type { RelayEnds } from "./relay.ts";
import type { SilenceWatch, SilenceWatcher } from "./silence-watch.ts";

export class Attempt implements Slotted, RelayEnds {
  slot = -1;
  /** Aborted by the client leaving, the silence limit, the shutdown, or the relay. */
  readonly controller = new AbortController();
  readonly started = performance.now();
  readonly silence: SilenceWatch;
  /** The upstream's answer, once its headers have come. */
  response: Response | undefined;
  /** The answer is relayed as the upstream encoded it (encoded-answers.ts): its bytes are not read. */
  encoded = false;

  constructor(
    readonly lease: KeyLease,
    private readonly clientSignal: AbortSignal,
    private readonly inFlight: LiveSet<Attempt>,
    silenceWatcher: SilenceWatcher,
    private readonly timeoutMs: number,
  ) {
    clientSignal.addEventListener("abort", this, { once: true });
    inFlight.add(this);
    this.silence = silenceWatcher.watch(timeoutMs, this);
  }

  get keyId(): string {
    return this.lease.keyId;
  }

  /** The client left: the upstream request goes too. */
  handleEvent(): void {
    this.controller.abort(this.clientSignal.reason);
  }

  onSilence(): void {
    this.controller.abort(new DOMException(`the upstream sent nothing for ${this.timeoutMs / 1000} s`, "TimeoutError"));
  }

  /** Whether the silence limit ended this attempt. */
  get timedOut(): boolean {
    const reason: unknown = this.controller.signal.reason;
    return reason instanceof DOMException && reason.name === "TimeoutError";
  }

  /** The answer has been read (or dropped): nothing of this attempt is watched any more. */
  release(): void {
    this.silence.stop();
    this.detach();
  }

  /** As `release`, for a relay that stops the silence watch itself. */
  detach(): void {
    this.clientSignal.removeEventListener("abort", this);
    this.inFlight.delete(this);
  }

  relayEnded(): void {
    this.release();
  }

  /** Ends the upstream request and its body early (another attempt follows, or nobody waits). */
  drop(reader: ChunkReader | undefined): void {
    reader?.cancel().catch(() => {});
    this.controller.abort();
    this.release();
  }
}

/**
 * How an attempt failed to serve. Every kind goes through the one failure path of the request
 * run (classified once, reported once, noted once, retried or not once).
 */
export type Failure =
  /**
   * No usable answer: `fetch` threw, an answer broke off before the commit point (whatever its
   * kind), or a 200 said JSON and was not. An upstream fault: nobody's key is blamed.
   * `thrown`: a read failed, so the client leaving may be the cause.
   */
  | { kind: "fault"; status: number; reason: string; noted: string; thrown: boolean; timedOut: boolean }
  /** An error answer: an error status, an error event before content, a 200 carrying an error. */
  | {
      kind: "answer";
      /** The status the error stands for (an error event's code, or the answer's status). */
      status: number;
      /** The status the answer came with. */
      answerStatus: number;
      facts: ErrorBodyFacts;
      bytes: Uint8Array;
      headers: Headers;
      /** An error answer larger than what was read: the rest, relayed if it is the client's answer. */
      rest?: ChunkReader;
      /** The bytes are as the upstream encoded them (gzip, br): not read, relayed with their encoding. */
      encoded?: boolean;
      /** An error event before a stream's content: the stream, relayed as it came if the request is at fault. */
      stream?: { reader: ChunkReader; held: Uint8Array[] };
    };
