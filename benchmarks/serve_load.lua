-- wrk script for benchmarks/serve.py: POST each line of $AITK_BODIES in turn (JSON bodies), count
-- the answers that are not 200 or hold an error row, and print one JSON line of totals and latency
-- percentiles (microseconds) at the end.
local bodies = {}
for line in io.lines(os.getenv("AITK_BODIES")) do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json"}
local next_body = 0
local threads = {}
bad = 0  -- global: done() reads it from each thread

function setup(thread)
  threads[#threads + 1] = thread
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[next_body])
end

function response(status, _, body)
  if status ~= 200 or body:find('"error":"', 1, true) then bad = bad + 1 end
end

function done(summary, latency, _)
  local total_bad = 0
  for _, thread in ipairs(threads) do total_bad = total_bad + thread:get("bad") end
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, "bad": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), total_bad,
    e.connect + e.read + e.write + e.timeout))
end
