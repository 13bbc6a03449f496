import { describe, expect, test } from "bun:test";
import { LineBuffer, recycleBlocks } from "../src/observe/log/line-buffer.ts";

const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

describe("line buffer", () => {
  test("lines come back as UTF-8, in order, each ending in one newline, and take() empties the buffer", () => {
    const buffer = new LineBuffer();
    const lines = ["plain", "ends with its own newline\n", "ünïcödé and 漢字 and 🙂", ""];
    let bytes = 0;
    for (const line of lines) bytes += buffer.append(line);
    expect(buffer.lineCount).toBe(4);
    const taken = buffer.take();
    expect(taken.lineCount).toBe(4);
    expect(taken.bytes.byteLength).toBe(bytes);
    expect(decode(taken.bytes)).toBe("plain\nends with its own newline\nünïcödé and 漢字 and 🙂\n\n");
    expect(buffer.lineCount).toBe(0);
    expect(buffer.take()).toEqual({ bytes: new Uint8Array(0), lineCount: 0 });
  });

  test("many lines across blocks, and a line larger than a block, keep every byte", () => {
    const buffer = new LineBuffer();
    const expected: string[] = [];
    for (let index = 0; index < 3000; index++) {
      const line = index === 1500 ? `big ${"é".repeat(100_000)}` : `line ${index} ${"x".repeat(index % 97)} ✓`;
      buffer.append(line);
      expected.push(`${line}\n`);
    }
    expect(decode(buffer.take().bytes)).toBe(expected.join(""));
  });

  test("blocks written out are filled again by later lines instead of new ones", () => {
    const first = new LineBuffer();
    for (let index = 0; index < 2000; index++) first.append(`first ${index} ${"a".repeat(60)}`);
    const taken = first.takeBlocks();
    expect(taken.lineCount).toBe(2000);
    const text = taken.blocks.map(decode).join("");
    expect(text.split("\n")).toHaveLength(2001);
    recycleBlocks(taken.blocks);
    const reused = new Set(taken.blocks.map((block) => block.buffer));
    const second = new LineBuffer();
    second.append("second");
    const [block] = second.takeBlocks().blocks;
    expect(reused.has(block?.buffer as ArrayBuffer)).toBe(true);
    expect(decode(block as Uint8Array)).toBe("second\n");
  });

  test("bytes put back first come before the lines appended since", () => {
    const buffer = new LineBuffer();
    buffer.append("later");
    const requeued = new LineBuffer();
    requeued.appendBytes({ bytes: new TextEncoder().encode("earlier\n"), lineCount: 1 });
    requeued.appendBytes(buffer.take());
    expect(requeued.lineCount).toBe(2);
    expect(decode(requeued.take().bytes)).toBe("earlier\nlater\n");
  });
});
