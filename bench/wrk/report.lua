-- Shared wrk done() hook: prints one JSON line with throughput and latency percentiles (µs).
-- Loaded by the other scripts in this folder with dofile().
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%.1f,"mean":%.2f,"stdev":%.2f,"max":%.1f,"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
