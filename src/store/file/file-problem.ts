/**
 * What a failed file operation on the keys file means, in one line a person can act on:
 * `cannot write /srv/keys.json: the file system is read-only`. The system's own message is not
 * used: it names whichever file the call touched (a temporary file, the lock), not the one the
 * person configured, and reads like `EROFS: read-only file system, open '…'`.
 */
import { dirname } from "node:path";

export type FileAction = "read" | "write";

/** The errno code of a failed file call, if it has one. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

export const isNotFound = (error: unknown) => errorCode(error) === "ENOENT";
export const isExists = (error: unknown) => errorCode(error) === "EEXIST";

/** `cannot <action> <file>: <cause>`, one line. `file` is the path as the person gave it. */
export function describeFileProblem(action: FileAction, file: string, error: unknown): string {
  return `cannot ${action} ${file}: ${causeOf(error, file)}`;
}

function causeOf(error: unknown, file: string): string {
  switch (errorCode(error)) {
    case "ENOENT":
      return `the folder ${dirname(file)} does not exist`;
    case "ENOTDIR":
      return `a part of the path ${dirname(file)} is not a folder`;
    case "EACCES":
    case "EPERM":
      return `permission denied (the file or its folder ${dirname(file)} is not writable or readable by this user)`;
    case "EROFS":
      return "the file system is read-only";
    case "ENOSPC":
      return "no space left on the device";
    case "EDQUOT":
      return "the disk quota is used up";
    case "EISDIR":
      return "it is a folder, not a file";
    case "ELOOP":
      return "too many symbolic links (a link points back to itself)";
    case "EMFILE":
    case "ENFILE":
      return "too many open files";
    case "EIO":
      return "an input/output error on the device";
    default: {
      const code = errorCode(error);
      const message = error instanceof Error ? error.message : String(error);
      // Only the first line: a message must never drag a stack or a multi-line dump along.
      const first = message.split("\n", 1)[0] ?? "";
      return code && !first.startsWith(code) ? `${code}: ${first}` : first;
    }
  }
}
