-- Shared by every benchmark script: argument parsing, realistic events, per-status counts
-- and a machine-readable summary. Loaded with dofile() by ingest.lua and read.lua.
--
-- wrk runs this file in the setup/done state and in each thread's own state, so nothing
-- here may rely on state shared between threads: threads report through thread:get().

local common = {}

-- "key=value" arguments given after `--` on the wrk command line.
function common.parse_args(args)
   local options = {}
   for _, arg in ipairs(args or {}) do
      local key, value = arg:match("^([%w_]+)=(.*)$")
      if key == nil then
         error("benchmark script argument is not key=value: " .. tostring(arg))
      end
      options[key] = tonumber(value) or value
   end
   return options
end

-- One standard-normal draw (Box-Muller): purchase amounts are log-normal, like real baskets.
local function gauss()
   local u = math.max(math.random(), 1e-12)
   return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * math.random())
end

local referrers = { "", "https://www.google.com/", "https://news.ycombinator.com/",
                    "https://twitter.com/", "https://example.org/blog" }

-- The fields of an event after its ids, closing brace included, so the memory scenario can
-- prefix counter-generated ids cheaply. Mix: 70% pageview, 20% click, 10% purchase.
-- `timestamp` is omitted on purpose: arrival time is always valid, never "in the future".
function common.event_tail(page)
   local r = math.random()
   if r < 0.70 then
      return string.format('"type":"pageview","properties":{"page":"/p/%d","referrer":"%s"}}',
                           page, referrers[math.random(#referrers)])
   elseif r < 0.90 then
      return string.format('"type":"click","properties":{"element":"btn-%d","page":"/p/%d"}}',
                           math.random(0, 199), page)
   end
   return string.format(
      '"type":"purchase","properties":{"amount":%.2f,"currency":"EUR","sku":"sku-%d"}}',
      math.exp(3.0 + 0.8 * gauss()), math.random(0, 4999))
end

function common.event(user, session, page)
   return string.format('{"user_id":"u%d","session_id":"s%d",', user, session)
      .. common.event_tail(page)
end

-- Response bookkeeping, read by done() through thread:get(). Counting statuses needs the
-- response() hook, which makes wrk hand us headers and body: every script pays the same cost,
-- and the generator-ceiling scenario measures it.
statuses = {}
accepted = 0
stopped = false

function common.count(status)
   statuses[status] = (statuses[status] or 0) + 1
   if status >= 200 and status < 300 then
      accepted = accepted + 1
   end
end

-- A count-bounded thread stops itself; wrk's main thread still sleeps until -d or SIGINT, so
-- tell the harness (which sends SIGINT once every thread has stopped). Flush: stdout is a pipe.
function common.stop_thread()
   if not stopped then
      stopped = true
      io.write("WRK_THREAD_STOPPED\n")
      io.flush()
      wrk.thread:stop()
   end
end

local threads = {}

function common.setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads - 1)
end

local function json_number(value)
   if value ~= value or value == math.huge or value == -math.huge then
      return "null"
   end
   return string.format("%.17g", value)
end

-- One JSON line for the harness, so it parses numbers rather than wrk's human summary.
function common.done(summary, latency)
   local merged = {}
   local ok = 0
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         merged[status] = (merged[status] or 0) + count
      end
      ok = ok + (thread:get("accepted") or 0)
   end
   local status_parts = {}
   for status, count in pairs(merged) do
      table.insert(status_parts, string.format('"%d":%d', status, count))
   end
   local e = summary.errors
   local parts = {
      '"requests":' .. summary.requests,
      '"duration_us":' .. summary.duration,
      '"bytes":' .. summary.bytes,
      '"ok_responses":' .. ok,
      string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
                    e.connect, e.read, e.write, e.status, e.timeout),
      '"statuses":{' .. table.concat(status_parts, ",") .. "}",
      string.format('"latency_us":{"min":%s,"mean":%s,"max":%s,"stdev":%s,"p50":%s,"p90":%s,'
                       .. '"p99":%s,"p999":%s}',
                    json_number(latency.min), json_number(latency.mean),
                    json_number(latency.max), json_number(latency.stdev),
                    json_number(latency:percentile(50)), json_number(latency:percentile(90)),
                    json_number(latency:percentile(99)), json_number(latency:percentile(99.9))),
   }
   io.write("WRK_JSON {" .. table.concat(parts, ",") .. "}\n")
   io.flush()
end

return common
