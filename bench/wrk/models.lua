-- GET the models list (a few hundred KB of JSON from the mock).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

wrk.method = "GET"
wrk.headers["Authorization"] = os.getenv("BENCH_CLIENT_AUTH") or "Bearer sk-client-bench"
-- As OpenAI SDKs (fetch) do: the mock then answers gzip, as OpenRouter does.
wrk.headers["Accept-Encoding"] = "gzip"
