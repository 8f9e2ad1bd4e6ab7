# A call's webhook (SPEC §9): "press 1 to confirm". Run: python3 examples/webhook/confirm.py
# Listens on 127.0.0.1:$PORT (default 8090); prints every event it gets, one JSON line each.
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer


def answer(ev):
    if ev.get("event") in ("answered", "redirected"):  # ask for one key; a key stops the prompt
        return {"actions": [{"gather": {"digits": 1, "timeout": 5, "prompt": ["sound:hello-world"]}}]}
    if ev.get("event") == "gathered":
        if ev.get("digits") == "1":
            return {"actions": [{"say": "1"}, {"hangup": {}}]}
        return {"actions": [{"play": "sound:hello-world"},
                            {"redirect": os.environ.get("SELF_URL", "http://127.0.0.1:8090/")}]}
    return {"actions": []}  # ended and other status events: nothing to do


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        ev = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        outcome = ev.get("outcome") or (ev.get("call") or {}).get("outcome")
        print(json.dumps({"event": ev.get("event"), "digits": ev.get("digits"), "outcome": outcome}), flush=True)
        body = json.dumps(answer(ev)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8090"))), Hook).serve_forever()
