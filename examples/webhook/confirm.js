// A call's webhook (SPEC §9): "press 1 to confirm". Run: node examples/webhook/confirm.js
// Listens on 127.0.0.1:$PORT (default 8090); prints every event it gets, one JSON line each.
const http = require("http");

function answer(ev) {
  switch (ev.event) {
    case "answered": // ask for one key; the prompt stops at the first key
    case "redirected":
      return { actions: [{ gather: { digits: 1, timeout: 5, prompt: ["sound:hello-world"] } }] };
    case "gathered":
      if (ev.digits === "1") return { actions: [{ say: "1" }, { hangup: {} }] };
      return { actions: [{ play: "sound:hello-world" }, { redirect: process.env.SELF_URL || "http://127.0.0.1:8090/" }] };
    default: // ended and other status events: nothing to do
      return { actions: [] };
  }
}

http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const ev = JSON.parse(body || "{}");
    console.log(JSON.stringify({ event: ev.event, digits: ev.digits, outcome: ev.outcome || (ev.call && ev.call.outcome) }));
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(answer(ev)));
  });
}).listen(Number(process.env.PORT || 8090), "127.0.0.1");
