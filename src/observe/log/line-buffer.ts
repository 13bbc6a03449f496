/**
 * Lines kept as UTF-8 bytes until they are written out, rather than as strings. Thousands of log
 * lines a second kept as strings until the next flush outlived the garbage collector's young
 * generation, and the full collections they caused cost more CPU than the proxy's own work
 * (counted with BUN_JSC_logGC=1). Encoded at once, a line's string dies young.
 */
const encoder = new TextEncoder();
const BLOCK_BYTES = 64 * 1024;
/** Written blocks come back here for the next lines: a block a few hundred lines long is not garbage. */
const spareBlocks: Uint8Array[] = [];
const MAX_SPARE_BLOCKS = 8;

/** Blocks a caller has written out and will not read again go back to be filled anew. */
export function recycleBlocks(blocks: readonly Uint8Array[]): void {
  for (const view of blocks) {
    if (spareBlocks.length >= MAX_SPARE_BLOCKS) return;
    if (view.buffer.byteLength === BLOCK_BYTES && view.byteOffset === 0) spareBlocks.push(new Uint8Array(view.buffer));
  }
}

const newline = new Uint8Array([10]);

/** Blocks as one array: the block itself when there is one, else a copy of them all. */
export function joinBlocks(blocks: readonly Uint8Array[]): Uint8Array {
  return blocks.length === 1 ? (blocks[0] as Uint8Array) : Buffer.concat(blocks);
}

/** Lines as UTF-8 bytes, each ending in a newline, in blocks of BLOCK_BYTES. */
export class LineBuffer {
  private blocks: Uint8Array[] = [];
  private block: Uint8Array | undefined;
  private used = 0;
  lineCount = 0;

  /** Adds a line (and its newline, unless it has one); returns the bytes it took. */
  append(line: string): number {
    this.lineCount++;
    // Room for the newline is kept by encode (it asks for one byte more than the line can take).
    const written = this.encode(line);
    if (line.charCodeAt(line.length - 1) === 10) return written;
    if (this.block) {
      this.block[this.used++] = 10;
    } else {
      this.blocks.push(newline);
    }
    return written + 1;
  }

  /** Everything so far, as the blocks it fills (written out with one vectored write, then recycled). */
  takeBlocks(): { blocks: Uint8Array[]; lineCount: number } {
    this.seal();
    const taken = { blocks: this.blocks, lineCount: this.lineCount };
    this.blocks = [];
    this.lineCount = 0;
    return taken;
  }

  /** Adds what another buffer's `take()` gave, after what this one holds. */
  appendBytes({ bytes, lineCount }: { bytes: Uint8Array; lineCount: number }): void {
    this.seal();
    this.blocks.push(bytes);
    this.lineCount += lineCount;
  }

  /** Everything so far, as one array, and how many lines it holds; the buffer is empty afterwards. */
  take(): { bytes: Uint8Array; lineCount: number } {
    const { blocks, lineCount } = this.takeBlocks();
    return { bytes: joinBlocks(blocks), lineCount };
  }

  private encode(text: string): number {
    if (!this.block || this.block.byteLength - this.used < text.length * 3 + 1) {
      this.seal();
      if (text.length * 3 + 1 > BLOCK_BYTES) {
        const bytes = encoder.encode(text); // a line larger than a block gets one of its own
        this.blocks.push(bytes);
        return bytes.byteLength;
      }
      this.block = spareBlocks.pop() ?? new Uint8Array(BLOCK_BYTES);
    }
    const { written } = encoder.encodeInto(text, this.block.subarray(this.used));
    this.used += written;
    return written;
  }

  private seal(): void {
    if (this.block && this.used > 0) this.blocks.push(this.block.subarray(0, this.used));
    this.block = undefined;
    this.used = 0;
  }
}
