import { expect, test } from "bun:test";
import { createEventBus } from "../src/observe/event-bus.ts";
import type { ProxyEventName } from "../src/domain/events.ts";

test("a failing event listener is handed to the error sink, and the other listeners still hear the event", () => {
  const failures: Array<{ name: ProxyEventName; message: string }> = [];
  const bus = createEventBus({ onListenerError: (name, error) => failures.push({ name, message: (error as Error).message }) });
  const heard: string[] = [];
  bus.on("key.enabled", () => {
    throw new Error("listener broke");
  });
  bus.on("key.enabled", ({ keyId }) => heard.push(keyId));

  expect(() => bus.emit("key.enabled", { keyId: "k_1" })).not.toThrow();
  expect(heard).toEqual(["k_1"]);
  expect(failures).toEqual([{ name: "key.enabled", message: "listener broke" }]);
});
