#!/usr/bin/env python3
"""Memory per idle TLS connection of mllp-relay, measured as the performance study does: hold
N TLS connections (handshake done, no message), read the relay's RSS, and divide the growth
between 100 and N connections by the difference.

  scripts/idle-rss.py [--relay target/release/mllp-relay] [--connections 1000] [--workers 1]

Makes a throwaway certificate with openssl; everything runs on 127.0.0.1 and stops by itself.
"""
import argparse, os, re, socket, ssl, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--relay", default="target/release/mllp-relay")
ap.add_argument("--connections", type=int, default=1000)
ap.add_argument("--workers", type=int, default=1)
a = ap.parse_args()

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

with tempfile.TemporaryDirectory() as tmp:
    cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-days", "1", "-keyout", key, "-out", cert], check=True, capture_output=True)
    dead = socket.socket(); dead.bind(("127.0.0.1", 0)); forward = dead.getsockname(); dead.close()
    relay = subprocess.Popen([a.relay, "--listen", "127.0.0.1:0", "--forward", f"127.0.0.1:{forward[1]}",
                              "--tls-cert", cert, "--tls-key", key, "--workers", str(a.workers), "--log", "warn"],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = relay.stdout.readline()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
        ctx = ssl.create_default_context(cafile=cert)
        held, samples = [], {}
        time.sleep(0.3)
        samples[0] = rss_kib(relay.pid)
        for target in (100, a.connections):
            while len(held) < target:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                held.append(ctx.wrap_socket(s, server_hostname="127.0.0.1"))
            time.sleep(2.0)   # idle connections give their buffers back after 1 s
            samples[target] = rss_kib(relay.pid)
        per = (samples[a.connections] - samples[100]) / (a.connections - 100)
        print(f"relay RSS: idle {samples[0]} KiB, {100} conns {samples[100]} KiB, "
              f"{a.connections} conns {samples[a.connections]} KiB")
        print(f"per idle TLS connection: {per:.1f} KiB")
        for s in held:
            s.close()
    finally:
        relay.terminate()
        relay.wait(timeout=10)
