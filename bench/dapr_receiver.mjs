// A local stand-in for a Dapr sidecar's publish endpoint, for bench/events.sh: answers 204
// to `POST /v1.0/publish/...` and records, for each event, the time from its CloudEvents
// `time` (the commit time the service wrote) to its arrival here: the relay's commit-to-sink
// lag. `GET /stats` returns {count, median_ms, p99_ms, max_ms}.
//
//   node bench/dapr_receiver.mjs PORT
import http from "node:http";

const port = Number(process.argv[2]);
const lags = [];
http
  .createServer((req, res) => {
    if (req.method === "POST" && req.url.startsWith("/v1.0/publish/")) {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const arrived = Date.now();
        try {
          lags.push(arrived - Date.parse(JSON.parse(body).time));
        } catch {
          // Not an event: counted nowhere.
        }
        res.writeHead(204);
        res.end();
      });
    } else if (req.url === "/stats") {
      const sorted = [...lags].sort((a, b) => a - b);
      const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ count: sorted.length, median_ms: at(0.5), p99_ms: at(0.99), max_ms: sorted.at(-1) ?? null }));
    } else {
      res.writeHead(404);
      res.end();
    }
  })
  .listen(port, "127.0.0.1");
