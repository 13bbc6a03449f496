/**
 * Atomically exchanges two paths: afterwards each names the file the other named. Writing the
 * keys file this way (exchange the new file in, then look at what came out) tells the store
 * exactly what it replaced, so an edit that landed after the store read the file is seen and
 * merged, never silently renamed over. A plain rename cannot say what it replaced.
 *
 * Linux: renameat2(RENAME_EXCHANGE), through bun:ffi (glibc 2.28+, kernel 3.15+). macOS:
 * renamex_np(RENAME_SWAP). Elsewhere, or where the call is missing, `swapFiles` answers
 * "unsupported" and the store falls back to compare-then-rename.
 */
import { dlopen, FFIType, toArrayBuffer, type Pointer } from "bun:ffi";

export type SwapResult = "swapped" | "missing" | "unsupported";

const AT_FDCWD = -100;
const RENAME_EXCHANGE = 2; // Linux
const RENAME_SWAP = 2; // macOS
const ENOENT = 2;

type Swap = (from: string, to: string) => SwapResult;

function loadSwap(): Swap | undefined {
  // The buffer itself goes to the call (bun:ffi keeps it alive through it), not a raw pointer
  // to a buffer nothing references any more.
  const path = (text: string) => Buffer.from(`${text}\0`);
  try {
    if (process.platform === "linux") {
      const libc = dlopen("libc.so.6", {
        renameat2: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
        __errno_location: { args: [], returns: FFIType.ptr },
      });
      return (from, to) => {
        if (libc.symbols.renameat2(AT_FDCWD, path(from), AT_FDCWD, path(to), RENAME_EXCHANGE) === 0) return "swapped";
        return errno(libc.symbols.__errno_location()) === ENOENT ? "missing" : "unsupported";
      };
    }
    if (process.platform === "darwin") {
      const libc = dlopen("libSystem.B.dylib", {
        renamex_np: { args: [FFIType.ptr, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
        __error: { args: [], returns: FFIType.ptr },
      });
      return (from, to) => {
        if (libc.symbols.renamex_np(path(from), path(to), RENAME_SWAP) === 0) return "swapped";
        return errno(libc.symbols.__error()) === ENOENT ? "missing" : "unsupported";
      };
    }
  } catch {
    // No such library or symbol (musl, an old glibc): compare-then-rename it is.
  }
  return undefined;
}

/** The C `errno`, read through the pointer its location function returns. */
function errno(location: Pointer | bigint | null): number {
  if (location === null || typeof location === "bigint") return 0;
  return new Int32Array(toArrayBuffer(location, 0, 4))[0] ?? 0;
}

let swap: Swap | undefined | null = null;

/** Exchanges `from` and `to`; "missing" when one of them does not exist (nothing was changed). */
export function swapFiles(from: string, to: string): SwapResult {
  if (swap === null) swap = loadSwap();
  return swap ? swap(from, to) : "unsupported";
}
