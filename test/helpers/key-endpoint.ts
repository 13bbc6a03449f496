/**
 * OpenRouter's `GET /key` on the fake upstream: a known answer for the keys a test calls valid,
 * OpenRouter's 401 for the rest, and any other path handled as the test says.
 */
import { chatCompletion, errorReply, type FakeHandler } from "./fake-openrouter.ts";

export const keyInfo = {
  label: "x",
  limit: 10,
  limit_remaining: 7.5,
  usage: 2.5,
  is_free_tier: false,
  creator_user_id: "user_abc",
  rate_limit: { requests: 20, interval: "10s" },
};

export function keyEndpoint(isValid: (key: string) => boolean, otherwise: FakeHandler = () => chatCompletion("hello")): FakeHandler {
  return (request) => {
    if (request.path !== "/key") return otherwise(request);
    return isValid(request.key) ? Response.json({ data: keyInfo }) : errorReply(401, "User not found.");
  };
}
