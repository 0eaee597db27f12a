-- POST load for the browser endpoint (Plausible's Events API): one hit per request, as
-- Plausible's tracker sends it (text/plain JSON with compact keys), from browsers behind a
-- trusted proxy (the daemon's server.trusted_proxies lists 127.0.0.1, so X-Forwarded-For is
-- the client's address and visitors are many).
--
-- Arguments (key=value after `--`): path (default /api/event); pool (distinct requests per
-- thread, built once in init() and cycled); pages (page ids per site); addresses (distinct
-- client addresses X-Forwarded-For is drawn from); threads (wrk -t).
--
-- Mix: 3 sites (60/30/10%); 70% pageviews, 30% custom events with props; referrers none
-- 40%, Google 30%, Twitter 10%, the same site 20%; 10% of the URLs carry a utm_campaign;
-- 6 desktop and mobile browsers (no crawler: every hit is counted).

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*/)") or "./"
local common = dofile(here .. "common.lua")

local pool = {}
local next_request = 0

-- Weighted choices: { weight, value } pairs, the weights summing to 1.
local function pick(choices)
   local r = math.random()
   for _, choice in ipairs(choices) do
      r = r - choice[1]
      if r < 0 then
         return choice[2]
      end
   end
   return choices[#choices][2]
end

local sites = {
   { 0.6, "example.com" },
   { 0.3, "shop.example.net" },
   { 0.1, "docs.example.org" },
}

local agents = {
   { 0.30, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      .. "Chrome/131.0.0.0 Safari/537.36" },
   { 0.10, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
      .. "(KHTML, like Gecko) Version/18.1 Safari/605.1.15" },
   { 0.08, "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0" },
   { 0.07, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      .. "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0" },
   { 0.25, "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
      .. "Chrome/131.0.0.0 Mobile Safari/537.36" },
   { 0.20, "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
      .. "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1" },
}

local campaigns = { "spring", "black-friday", "launch", "newsletter-42", "retargeting" }

-- Custom events and their props (the "p" object of the compact format).
local function custom(site)
   local r = math.random()
   if r < 0.4 then
      return "Signup", string.format('{"plan":"%s"}', math.random() < 0.7 and "free" or "pro")
   elseif r < 0.7 then
      return "Outbound Link: Click",
         string.format('{"url":"https://github.com/example/repo-%d"}', math.random(0, 49))
   elseif r < 0.9 then
      return "File Download",
         string.format('{"url":"https://%s/files/doc-%d.pdf"}', site, math.random(0, 99))
   end
   return "Add to cart",
      string.format('{"sku":"sku-%d","quantity":%d}', math.random(0, 4999), math.random(1, 3))
end

local function referrer(site, pages)
   local r = math.random()
   if r < 0.4 then
      return nil
   elseif r < 0.7 then
      return "https://www.google.com/"
   elseif r < 0.8 then
      return "https://t.co/" .. string.format("%x", math.random(0, 0xfffff))
   end
   return string.format("https://%s/p/%d", site, math.random(0, pages - 1))
end

-- Address n of the range: 10.x.y.z, z never 0.
local function address(n)
   return string.format("10.%d.%d.%d", math.floor(n / 65024) % 256,
                        math.floor(n / 254) % 256, n % 254 + 1)
end

local function hit(pages)
   local site = pick(sites)
   local url = string.format("https://%s/p/%d", site, math.random(0, pages - 1))
   if math.random() < 0.10 then
      url = url .. "?utm_source=newsletter&utm_campaign=" .. campaigns[math.random(#campaigns)]
   end
   local parts = {}
   if math.random() < 0.70 then
      parts[1] = '{"n":"pageview"'
   else
      local name, props = custom(site)
      parts[1] = string.format('{"n":"%s","p":%s', name, props)
   end
   parts[#parts + 1] = string.format('"u":"%s","d":"%s"', url, site)
   local from = referrer(site, pages)
   if from then
      parts[#parts + 1] = string.format('"r":"%s"', from)
   end
   return table.concat(parts, ",") .. "}"
end

function setup(thread)
   common.setup(thread)
end

function init(args)
   local options = common.parse_args(args)
   local path = options.path or "/api/event"
   local pages = options.pages or 10000
   local addresses = options.addresses or 50000
   -- A different, reproducible stream per thread.
   math.randomseed(7000003 * ((thread_id or 0) + 1))
   for i = 1, (options.pool or 20000) do
      -- wrk.format adds Host and Content-Length to the table it is given: one per request.
      local headers = {
         ["Content-Type"] = "text/plain",
         ["User-Agent"] = pick(agents),
         ["X-Forwarded-For"] = address(math.random(0, addresses - 1)),
      }
      pool[i] = wrk.format("POST", path, headers, hit(pages))
   end
end

function request()
   next_request = next_request % #pool + 1
   return pool[next_request]
end

function response(status)
   common.count(status)
end

function done(summary, latency)
   common.done(summary, latency)
end
