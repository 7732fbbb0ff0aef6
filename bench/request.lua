-- wrk script used by bench/run.sh for every endpoint, and by bench/login_flood.sh through
-- bench/login_flood.lua (which loads it and adds a count of the responses by status).
--
-- The request is configured through the environment, read once per wrk thread when the
-- script loads (wrk then sends the same pre-formatted request over and over, so the script
-- adds no per-request Lua work to the load generator):
--   BENCH_METHOD  HTTP method (default GET)
--   BENCH_BODY    request body; when set, Content-Type: application/json is sent
--   BENCH_TOKEN   bearer token; when set, Authorization: Bearer <token> is sent
--   BENCH_PATHS   space-separated paths; when set, each thread sends them in turn (formatted
--                 once, at load) instead of the URL's path: spreads writes over many rows
--
-- done() prints one machine-readable line that run.sh and login_flood.sh parse:
--   BENCH_RESULT requests=… duration_us=… p50_us=… p99_us=… max_us=… non2xx=… connect=… read=… write=… timeout=…
-- `non2xx` is wrk's "Non-2xx or 3xx responses" counter (status >= 400); the other four
-- are wrk's "Socket errors".

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

local paths = os.getenv("BENCH_PATHS")
if paths ~= nil and paths ~= "" then
   local requests, next_index = {}, 0
   for path in paths:gmatch("%S+") do
      requests[#requests + 1] = wrk.format(nil, path)
   end
   function request()
      next_index = next_index % #requests + 1
      return requests[next_index]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
