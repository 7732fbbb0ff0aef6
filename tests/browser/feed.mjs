// Opens a page on another origin in Debian's headless Chromium (driven by playwright-core,
// which downloads no browser of its own) and lets the page use the live feed the way a web
// app does: fetch() with the bearer token and `Accept: text/event-stream`, reading the body
// as a stream. The page creates tasks through the API too (CORS preflights included) and
// reports the events it read. Prints one JSON line: {"events": [...], "error": ...}.
//
//   node feed.mjs <page url> <api address> <user id> <token> <tasks to create>
import { chromium } from "playwright-core";

const [pageUrl, api, userId, token, count] = process.argv.slice(2);
// A bound on the whole run, so a hang fails the test instead of stalling it.
setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out after 90 s", events: [] }));
  process.exit(2);
}, 90_000).unref();
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  const result = await page.evaluate(
    async ({ api, userId, token, count }) => {
      const auth = { Authorization: `Bearer ${token}` };
      const events = [];
      const response = await fetch(`${api}/api/${userId}/events`, {
        headers: { ...auth, Accept: "text/event-stream" },
      });
      if (!response.ok) return { error: `stream: ${response.status}`, events };
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (let n = 0; n < count; n++) {
        const created = await fetch(`${api}/api/${userId}/tasks`, {
          method: "POST",
          headers: { ...auth, "Content-Type": "application/json" },
          body: JSON.stringify({ title: `from the browser ${n}` }),
        });
        if (created.status !== 201) return { error: `create: ${created.status}`, events };
      }
      let buffer = "";
      while (events.length < count) {
        const { value, done } = await reader.read();
        if (done) return { error: "the stream ended", events };
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const frame = {};
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon <= 0) continue;
            frame[line.slice(0, colon)] = line.slice(colon + 1).trim();
          }
          if (frame.data) events.push({ id: frame.id, event: frame.event, data: JSON.parse(frame.data) });
        }
      }
      await reader.cancel();
      return { events, origin: location.origin };
    },
    { api, userId, token, count: Number(count) },
  );
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
