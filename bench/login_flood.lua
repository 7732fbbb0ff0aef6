-- wrk script used by bench/login_flood.sh, for both of its loads (the login flood and the
-- task-list load). It is bench/request.lua (the request from BENCH_METHOD, BENCH_BODY and
-- BENCH_TOKEN, pre-formatted by wrk; done()'s BENCH_RESULT line) plus a count of the
-- responses by status code, so that the flood's 503s from the bounded hashing queue can be
-- told apart from other failures. The count takes a response() hook, which wrk then runs
-- for every response in each thread: that is why it is not in request.lua, whose
-- bench/run.sh figures carry no per-request Lua work.
--
-- done() prints, after request.lua's line, the counts that login_flood.sh parses:
--   BENCH_STATUS 200=… 503=…        (one code=count pair per status seen)

-- request.lua stands beside this file (wrk is given this file's path).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "request.lua")
local request_done = done

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   request_done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      local seen = thread:get("statuses")
      if seen ~= nil then
         for code, n in pairs(seen) do
            counts[code] = (counts[code] or 0) + n
         end
      end
   end
   local codes = {}
   for code in pairs(counts) do
      table.insert(codes, code)
   end
   table.sort(codes)
   local line = "BENCH_STATUS"
   for _, code in ipairs(codes) do
      line = line .. string.format(" %s=%d", code, counts[code])
   end
   io.write(line .. "\n")
end
