-- wrk script used by bench/login_flood.sh, for both of its loads (the login flood and the
-- task-list load). Like bench/request.lua, the request is configured through the
-- environment, read once per wrk thread, and pre-formatted by wrk:
--   BENCH_METHOD  HTTP method (default GET)
--   BENCH_BODY    request body; when set, Content-Type: application/json is sent
--   BENCH_TOKEN   bearer token; when set, Authorization: Bearer <token> is sent
-- Unlike request.lua, it also counts responses by status code (response() runs once per
-- response in each thread; done() adds the threads' counts up), so that the flood's 503s
-- from the bounded hashing queue can be told apart from other failures.
--
-- done() prints two machine-readable lines that login_flood.sh parses:
--   BENCH_RESULT requests=… duration_us=… p50_us=… p99_us=… max_us=… non2xx=… connect=… read=… write=… timeout=…
--   BENCH_STATUS 200=… 503=…        (one code=count pair per status seen)

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end

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
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
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
