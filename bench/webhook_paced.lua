-- wrk script for bench/bench_sustained.py: signed repo:push deliveries at a fixed offered rate.
-- Open loop with a bounded number in flight (wrk's -c): the k-th request is due at
-- t0 + k / rate; delay() holds a free connection until its request is due, so the
-- offered rate does not depend on how fast the server answers, until all -c
-- connections are busy. Then requests go out late: the lateness (now - due time,
-- per second of the run) is how far the generator fell behind its schedule, and
-- the achieved rate says whether the offered rate was reached.
-- Deliveries are read from DATAFILE line by line (never repeated; memory stays flat),
-- the thread stops after COUNT responses (bounded in count; -d bounds time).
-- Usage: wrk -t1 -c64 -d75s -s bench/webhook_paced.lua URL -- DATAFILE RATE COUNT
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

local fh, rate, limit, slot, t0 = nil, 0, 0, 0, 0
-- Globals: done() reads them from the thread with thread:get().
t_first, t_last, counted, non2xx, sent, exhausted = 0, 0, 0, 0, 0, 0
per_sec, late = {}, {} -- responses and max lateness (ms) per second of the run
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  fh = assert(io.open(args[1], "rb"))
  rate = tonumber(args[2])
  limit = tonumber(args[3])
end

local function second(t)
  return math.floor(t - t0) + 1
end

function delay()
  local t = now()
  if t0 == 0 then t0 = t end
  local due = t0 + slot / rate
  slot = slot + 1
  local s = second(t)
  local lateness = (t - due) * 1000
  if lateness > (late[s] or 0) then late[s] = lateness end
  if due <= t then return 0 end
  return math.floor((due - t) * 1000) -- wrk counts whole milliseconds
end

function request()
  if t_first == 0 then t_first = now() end
  local line = fh:read("*l")
  if line == nil then
    exhausted = 1
    wrk.thread:stop() -- out of unique deliveries
    return wrk.format("GET", "/healthz")
  end
  local uuid, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  sent = sent + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Event-Key"] = "repo:push",
    ["X-Hook-UUID"] = "{bench-hook}",
    ["X-Request-UUID"] = uuid,
    ["X-Hub-Signature"] = sig,
  }, body)
end

local function encode(tbl, fmt)
  local n = 0
  for k, _ in pairs(tbl) do if k > n then n = k end end
  local parts = {}
  for i = 1, n do parts[i] = string.format(fmt, tbl[i] or 0) end
  return "[" .. table.concat(parts, ",") .. "]"
end

function response(status, headers, body)
  if counted >= limit then return end
  counted = counted + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  t_last = now() -- the last response so far: the rate holds even if -d cut the run short
  local s = second(t_last)
  per_sec[s] = (per_sec[s] or 0) + 1
  if counted == limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local first, last, c, bad, n_sent, ex = math.huge, 0, 0, 0, 0, 0
  local ps, lt = "[]", "[]"
  for _, t in ipairs(threads) do
    first = math.min(first, t:get("t_first"))
    last = math.max(last, t:get("t_last"))
    c = c + t:get("counted")
    bad = bad + t:get("non2xx")
    n_sent = n_sent + t:get("sent")
    ex = math.max(ex, t:get("exhausted"))
    ps = encode(t:get("per_sec"), "%d") -- one thread (-t1): its seconds are the run's
    lt = encode(t:get("late"), "%.1f")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "sent": %d, "elapsed_s": %.6f, "non2xx": %d, "exhausted": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"per_second": %s, "late_ms": %s}\n',
    c, n_sent, last - first, bad, ex, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, ps, lt))
end
