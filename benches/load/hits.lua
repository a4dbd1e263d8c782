-- wrk script for the hush load test: realistic Plausible tracker requests.
--
-- Environment (set by benches/load/run):
--   HUSH_LOAD_CORPUS   directory holding user_agents.tsv and referrers.tsv
--   HUSH_LOAD_MODE     "single" (POST /api/event) or "batch" (POST /api/events)
--   HUSH_LOAD_BATCH    events per batch request (default 100)
--   HUSH_LOAD_SITE     the site domain (default bench.example)
--   HUSH_LOAD_SEED     base random seed (default 2025)
--   HUSH_LOAD_OUT      file the final JSON summary is appended to
--   HUSH_LOAD_MEASURE_SECS  length of the measured window (wrk's -d adds a drain tail)
--
-- Each wrk thread pre-builds a pool of requests from a fixed-seed sample: visitors are
-- (address, User-Agent) pairs with the User-Agent drawn by corpus weight, so a few
-- browsers carry most hits and visitors come back; the address goes in
-- X-Forwarded-For (the collector trusts loopback as a proxy). Referrers are drawn by
-- weight, pages by a small popularity table. Every response is checked:
--   single: 202 without X-Hush-Dropped = stored hit; 202 with it = deliberate drop
--           (bots); anything else = refused.
--   batch:  202 body {"accepted":N,"stored":S,"dropped":D} is summed.
--
-- Exact accounting needs a clean end: wrk stops with one request in flight on each
-- connection and never reads those answers, so the collector may store hits nobody
-- saw acknowledged. After HUSH_LOAD_MEASURE_SECS, the script therefore sends the same
-- requests with a crawler User-Agent for the rest of the run (wrk's -d is longer):
-- the collector answers them like any hit but stores nothing, so the requests cut off
-- by wrk store nothing either. Throughput is counted over the measured window only;
-- wrk's latency percentiles include the drain tail (similar requests, DRAIN/(DURATION+DRAIN)
-- of them: 1/6 with the defaults).

local corpus = os.getenv("HUSH_LOAD_CORPUS") or "benches/corpus"
local mode = os.getenv("HUSH_LOAD_MODE") or "single"
local batch_size = tonumber(os.getenv("HUSH_LOAD_BATCH") or "100")
local site = os.getenv("HUSH_LOAD_SITE") or "bench.example"
local base_seed = tonumber(os.getenv("HUSH_LOAD_SEED") or "2025")
local out_path = os.getenv("HUSH_LOAD_OUT")
local measure_secs = tonumber(os.getenv("HUSH_LOAD_MEASURE_SECS") or "1e9")

-- Distinct pre-built requests per thread (batches are ~20 KiB each: fewer of them).
local POOL = (mode == "batch") and 256 or 4096
local DRAIN_POOL = 64
local VISITORS = 5000 -- distinct (address, User-Agent) pairs per thread
local DRAIN_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } hush_timespec;
int clock_gettime(int clk, hush_timespec *tp);
]]
local ts = ffi.new("hush_timespec")
local CLOCK_MONOTONIC = 1
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local paths = {
  {"/", 300}, {"/pricing", 60}, {"/blog/", 50},
  {"/blog/how-we-count-visitors-without-cookies", 40},
  {"/blog/2025/02/release-notes-0-9", 25}, {"/docs/getting-started", 45},
  {"/docs/configuration/sites", 20}, {"/docs/api/events", 15}, {"/about", 12},
  {"/contact", 10}, {"/signup", 18}, {"/login", 22}, {"/features/privacy", 14},
  {"/changelog", 8}, {"/careers/senior-rust-engineer", 3},
}
local utms = {
  {"", 900},
  {"?utm_source=newsletter&utm_medium=email&utm_campaign=2025-02", 40},
  {"?utm_source=twitter&utm_medium=social", 20},
  {"?utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=privacy+analytics", 25},
  {"?ref=producthunt", 10},
  {"?utm_source=github&utm_medium=referral&utm_content=readme", 5},
}

-- Weighted table: values plus cumulative weights, sampled by binary search.
local function table_of(pairs_list)
  local t = {values = {}, cum = {}, total = 0}
  for i, p in ipairs(pairs_list) do
    t.total = t.total + p[2]
    t.values[i] = p[1]
    t.cum[i] = t.total
  end
  return t
end

local function load_tsv(path)
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  local list = {}
  local first = true
  for line in f:lines() do
    if first then
      first = false
    else
      local w, v = line:match("^(%d+)\t(.*)$")
      if w then list[#list + 1] = {v, tonumber(w)} end
    end
  end
  f:close()
  return table_of(list)
end

local function pick(t)
  local r = math.random() * t.total
  local lo, hi = 1, #t.cum
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if t.cum[mid] < r then lo = mid + 1 else hi = mid end
  end
  return t.values[lo]
end

local function json_str(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

local ua_table, ref_table
local path_table, utm_table = table_of(paths), table_of(utms)

local function event_json()
  local url = "https://" .. site .. pick(path_table) .. pick(utm_table)
  local ref = pick(ref_table)
  local name = '"pageview"'
  local props = ""
  if math.random(20) == 1 then
    name = '"Signup"'
    props = ',"p":{"plan":"team","seats":5}'
  end
  local r = (ref == "") and "null" or json_str(ref)
  return '{"n":' .. name .. ',"u":' .. json_str(url) .. ',"d":"' .. site .. '","r":' .. r .. props .. '}'
end

-- Main state: remember threads so done() can sum their counters.
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  threads[thread_count] = thread
end

-- Thread state.
local requests, drain_requests = {}, {}
local next_req, next_drain = 1, 1
local drain_at = nil
acked, dropped, refused, stored_in_batches, dropped_in_batches = 0, 0, 0, 0, 0
-- Within the measured window: all responses, 202s, and 202s that were drops (bots).
measured, measured_202, measured_dropped = 0, 0, 0
statuses = {}

function init(args)
  math.randomseed(base_seed * 1000 + (thread_id or 1))
  ua_table = load_tsv(corpus .. "/user_agents.tsv")
  ref_table = load_tsv(corpus .. "/referrers.tsv")
  local visitors = {}
  for i = 1, VISITORS do
    -- 1.0.0.0 .. 222.255.255.255: public-looking unicast addresses.
    local ip = string.format("%d.%d.%d.%d", math.random(1, 222), math.random(0, 255),
      math.random(0, 255), math.random(1, 254))
    visitors[i] = {ip, pick(ua_table)}
  end
  for i = 1, POOL do
    local v = visitors[math.random(VISITORS)]
    local headers = {
      ["Content-Type"] = "text/plain",
      ["User-Agent"] = v[2],
      ["X-Forwarded-For"] = v[1],
    }
    local path, body
    if mode == "batch" then
      local events = {}
      for j = 1, batch_size do events[j] = event_json() end
      path, body = "/api/events", "[" .. table.concat(events, ",") .. "]"
    else
      path, body = "/api/event", event_json()
    end
    requests[i] = wrk.format("POST", path, headers, body)
    if i <= DRAIN_POOL then
      headers["User-Agent"] = DRAIN_UA
      drain_requests[i] = wrk.format("POST", path, headers, body)
    end
  end
end

function request()
  local t = now()
  if drain_at == nil then drain_at = t + measure_secs end
  if t >= drain_at then
    local r = drain_requests[next_drain]
    next_drain = next_drain + 1
    if next_drain > DRAIN_POOL then next_drain = 1 end
    return r
  end
  local r = requests[next_req]
  next_req = next_req + 1
  if next_req > POOL then next_req = 1 end
  return r
end

function response(status, headers, body)
  local in_window = drain_at and now() < drain_at
  if in_window then measured = measured + 1 end
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 202 then
    refused = refused + 1
    return
  end
  if in_window then measured_202 = measured_202 + 1 end
  if mode == "batch" then
    local s = body:match('"stored":(%d+)')
    local d = body:match('"dropped":(%d+)')
    stored_in_batches = stored_in_batches + tonumber(s or "0")
    dropped_in_batches = dropped_in_batches + tonumber(d or "0")
    if in_window and d then measured_dropped = measured_dropped + tonumber(d) end
    acked = acked + 1
  elseif headers["x-hush-dropped"] or headers["X-Hush-Dropped"] then
    dropped = dropped + 1
    if in_window then measured_dropped = measured_dropped + 1 end
  else
    acked = acked + 1
  end
end

function done(summary, latency, reqs)
  local t = {acked = 0, dropped = 0, refused = 0, stored_in_batches = 0, dropped_in_batches = 0,
    measured = 0, measured_202 = 0, measured_dropped = 0}
  local st = {}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
    local s = thread:get("statuses") or {}
    for code, n in pairs(s) do st[tostring(code)] = (st[tostring(code)] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(st) do parts[#parts + 1] = string.format('"%s":%d', code, n) end
  -- Throughput over the measured window (all threads start together).
  local secs = math.min(summary.duration / 1e6, measure_secs)
  local e = summary.errors
  local line = string.format(
    '{"mode":"%s","requests":%d,"all_requests":%d,"seconds":%.3f,"rps":%.1f,"rps_202":%.1f,"measured_dropped":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,'
      .. '"max_us":%d,"acked":%d,"dropped":%d,"refused":%d,"stored_in_batches":%d,'
      .. '"dropped_in_batches":%d,"socket_errors":%d,"statuses":{%s}}',
    mode, t.measured, summary.requests, secs, t.measured / secs, t.measured_202 / secs, t.measured_dropped,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    t.acked, t.dropped, t.refused, t.stored_in_batches, t.dropped_in_batches,
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ","))
  print(line)
  if out_path then
    local f = assert(io.open(out_path, "a"))
    f:write(line, "\n")
    f:close()
  end
end
