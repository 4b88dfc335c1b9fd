"""COUNT token requests with a wrong secret from this host; prints JSON [[status, error,
Retry-After], ...]. With --right ENV_FILE: one request with this store's own id and secret
(read from the agent's settings file), printing only the status and whether a token came."""

import json
import ssl
import sys
import urllib.error
import urllib.request
import uuid

url, cafile = sys.argv[1] + "/api/v1/auth/token/", sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)


def post(body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"error": "not-json", "detail": raw[:80].decode(errors="replace")}
        return exc.code, payload, exc.headers


if len(sys.argv) > 3 and sys.argv[3] == "--right":
    env = dict(line.split("=", 1) for line in open(sys.argv[4]).read().splitlines()
               if "=" in line and not line.startswith("#"))
    status, payload, _ = post({"store_id": env["PHOTO_SYNC_EDGE_STORE_ID"],
                               "secret": env["PHOTO_SYNC_EDGE_STORE_SECRET"]})
    print(json.dumps({"status": status, "token": bool(payload.get("access"))}))
else:
    fake = str(uuid.uuid4())
    out = []
    for _ in range(30):
        status, payload, headers = post({"store_id": fake, "secret": "wrong-secret-0123456789"})
        out.append([status, payload.get("error", ""), headers.get("Retry-After", "")])
    print(json.dumps(out))
