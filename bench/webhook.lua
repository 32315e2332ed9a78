-- wrk script for bench/bench_webhook.py: pre-signed repo:push deliveries, one per request,
-- never repeated; the thread stops after `limit` responses (bounded in count; -d bounds time).
-- wrk itself waits out -d after a thread stops, so the elapsed time is measured here
-- (monotonic clock through LuaJIT's FFI) from the first request to the limit-th response.
-- Usage: wrk -t1 -c32 -d60s -s bench/webhook.lua URL -- DATAFILE LIMIT
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } rc_timespec;
  int clock_gettime(int clk, rc_timespec *ts);
]]
local ts = ffi.new("rc_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local data, n, idx, limit = {}, 0, 0, 0
-- Globals: done() reads them from the thread with thread:get().
t_first, t_last, counted, non2xx = 0, 0, 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  limit = tonumber(args[2])
  for line in io.lines(path) do
    local uuid, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    n = n + 1
    data[n] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-Event-Key"] = "repo:push",
      ["X-Hook-UUID"] = "{bench-hook}",
      ["X-Request-UUID"] = uuid,
      ["X-Hub-Signature"] = sig,
    }, body)
  end
end

function request()
  if t_first == 0 then t_first = now() end
  idx = idx + 1
  if idx > n then
    wrk.thread:stop() -- out of unique deliveries
    idx = n
  end
  return data[idx]
end

function response(status, headers, body)
  if counted >= limit then return end
  counted = counted + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if counted == limit then
    t_last = now()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local first, last, c, bad = math.huge, 0, 0, 0
  for _, t in ipairs(threads) do
    first = math.min(first, t:get("t_first"))
    last = math.max(last, t:get("t_last"))
    c = c + t:get("counted")
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "elapsed_s": %.6f, "non2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    c, last - first, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
