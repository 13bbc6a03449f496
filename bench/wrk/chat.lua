-- POST a small non-streamed chat completion (what most OpenAI-compatible clients send).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_CLIENT_AUTH") or "Bearer sk-client-bench"
wrk.body = '{"model":"openai/gpt-4o-mini","stream":false,"max_tokens":64,"temperature":0.2,' ..
  '"messages":[{"role":"system","content":"You are a concise assistant."},' ..
  '{"role":"user","content":"What is the capital of France? Answer in two sentences."}]}'
