"""Slowloris at the gateway: CONNECTIONS TLS connections that send a request line and
then one header line every INTERVAL seconds, never finishing the headers, for at most
LIMIT seconds. Prints JSON: how many the gateway closed, and after how long each."""

import json
import socket
import ssl
import sys
import time

host, cafile = sys.argv[1], sys.argv[2]
CONNECTIONS, INTERVAL, LIMIT = 6, 2.0, 45.0

ctx = ssl.create_default_context(cafile=cafile)
conns = []
for _ in range(CONNECTIONS):
    raw = socket.create_connection((host, 443), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=host)
    tls.sendall(f"GET /api/v1/health/ HTTP/1.1\r\nHost: {host}\r\n".encode())
    conns.append({"sock": tls, "opened": time.monotonic(), "closed_after": None})

start = time.monotonic()
while time.monotonic() - start < LIMIT and any(c["closed_after"] is None for c in conns):
    time.sleep(INTERVAL)
    for n, c in enumerate(conns):
        if c["closed_after"] is not None:
            continue
        try:
            c["sock"].sendall(f"X-Trickle-{n}: {int(time.monotonic())}\r\n".encode())
            c["sock"].settimeout(0.05)
            try:
                if c["sock"].recv(1024) == b"":
                    raise ConnectionResetError("closed")
            except (socket.timeout, ssl.SSLWantReadError):
                pass
        except (OSError, ssl.SSLError):
            c["closed_after"] = round(time.monotonic() - c["opened"], 1)

print(json.dumps({"connections": CONNECTIONS,
                  "closed_by_gateway": sum(c["closed_after"] is not None for c in conns),
                  "closed_after": [c["closed_after"] for c in conns]}))
