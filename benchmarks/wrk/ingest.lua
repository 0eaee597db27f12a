-- POST load for the ingest routes: single events or batches of them.
--
-- Arguments (key=value after `--`): path; batch (0: one event per request, else a JSON array
-- of that many); users, sessions, pages (id ranges); pool (distinct requests per thread, built
-- once in init() and cycled: cheap for wrk); pages_cycle=1 (pages in order, so every one of
-- them really arrives); counter=1 (build each request from a per-thread counter instead of a
-- pool, so `users` distinct users really arrive); quota (stop a thread after this many 2xx
-- responses; 0: only wrk's -d bounds the run); threads (wrk -t, to interleave counters).

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./"
local common = dofile(here .. "common.lua")

local headers = { ["Content-Type"] = "application/json" }
local path, batch, quota
local pool = {}
local next_request = 0
-- Counter mode: event tails (type and properties) to combine with generated ids.
local tails = {}
local counter, threads, tid, users, sessions = 0, 1, 0, 1, 1

function setup(thread)
   common.setup(thread)
end

local function body_of(events)
   if batch == 0 then
      return events[1]
   end
   return "[" .. table.concat(events, ",") .. "]"
end

function init(args)
   local options = common.parse_args(args)
   path = options.path or "/api/v1/events/batch"
   batch = options.batch or 100
   quota = options.quota or 0
   threads = options.threads or 1
   tid = thread_id or 0
   users = options.users or 1000000
   sessions = options.sessions or 200000
   local pages = options.pages or 10000
   -- A different, reproducible stream per thread.
   math.randomseed(1000003 * (tid + 1))

   local page_cursor = math.floor(tid * pages / threads)
   local function next_page()
      if options.pages_cycle == 1 then
         page_cursor = (page_cursor + 1) % pages
         return page_cursor
      end
      return math.random(0, pages - 1)
   end

   if options.counter == 1 then
      for i = 1, 4096 do
         tails[i] = common.event_tail(next_page())
      end
      return
   end
   for i = 1, (options.pool or 200) do
      local events = {}
      for j = 1, math.max(batch, 1) do
         events[j] = common.event(math.random(0, users - 1), math.random(0, sessions - 1),
                                  next_page())
      end
      pool[i] = wrk.format("POST", path, headers, body_of(events))
   end
end

-- Counter mode: event n of this thread is global event n * threads + tid; users cycle through
-- the whole range (each arrives once per `users` events), five events per session.
local function counted_request()
   local events = {}
   for j = 1, math.max(batch, 1) do
      local n = counter * threads + tid
      counter = counter + 1
      events[j] = '{"user_id":"u' .. (n % users) .. '","session_id":"s'
         .. (math.floor(n / 5) % sessions) .. '",' .. tails[(n % #tails) + 1]
   end
   return wrk.format("POST", path, headers, body_of(events))
end

function request()
   if #pool == 0 then
      return counted_request()
   end
   next_request = next_request % #pool + 1
   return pool[next_request]
end

function response(status)
   common.count(status)
   if quota > 0 and accepted >= quota then
      common.stop_thread()
   end
end

function done(summary, latency)
   common.done(summary, latency)
end
