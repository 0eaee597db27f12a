-- GET load at a modest, fixed pace: each connection waits `delay_ms` before every request,
-- so the rate is about connections * 1000 / (delay_ms + latency) per second.
--
-- Arguments (key=value after `--`): path (with its query string), delay_ms.

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./"
local common = dofile(here .. "common.lua")

local prepared
local pause_ms = 0

function setup(thread)
   common.setup(thread)
end

function init(args)
   local options = common.parse_args(args)
   prepared = wrk.format("GET", options.path or "/api/v1/metrics")
   pause_ms = options.delay_ms or 0
end

function delay()
   return pause_ms
end

function request()
   return prepared
end

function response(status)
   common.count(status)
end

function done(summary, latency)
   common.done(summary, latency)
end
