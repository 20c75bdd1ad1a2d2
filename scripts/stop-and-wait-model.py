#!/usr/bin/env python3
"""What ACK latency a stop-and-wait sender sees, given the relay's own service times.

An HL7 sender in original mode has one message in flight per connection: a message that falls
due while the previous one on its connection still waits for its ACK waits too, and an open-loop
load generator counts that wait (latency from the intended send time). This model draws each
message's service time independently from the relay's receive-to-ACK histogram
(`mllp_relay_total_seconds` in a saved `/metrics` page) and queues Poisson arrivals per
connection, so it shows how much of the sender's tail is that queueing alone; a measured tail
above it points at delays shared by all connections at once (a slow fdatasync holds every
waiting message).

  curl -s http://127.0.0.1:9464/metrics > metrics.txt   # after an open-loop run
  scripts/stop-and-wait-model.py metrics.txt --rate 17000 --connections 32
"""
import argparse, random, re

ap = argparse.ArgumentParser()
ap.add_argument("metrics", help="a saved /metrics page of mllp-relay")
ap.add_argument("--rate", type=float, required=True, help="messages per second, all connections")
ap.add_argument("--connections", type=int, default=32)
ap.add_argument("--messages", type=int, default=150_000)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()

text = open(a.metrics).read()
buckets = []
for m in re.finditer(r'^mllp_relay_total_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
    if m.group(1) != "+Inf":
        buckets.append((float(m.group(1)), float(m.group(2))))
if not buckets or buckets[-1][1] == 0:
    raise SystemExit("no mllp_relay_total_seconds observations in " + a.metrics)
total = buckets[-1][1]


def service_time(rng):
    """A draw from the histogram, uniform inside its bucket."""
    u, low, below = rng.random() * total, 0.0, 0.0
    for le, count in buckets:
        if u <= count and count > below:
            return low + (le - low) * (u - below) / (count - below)
        low, below = le, count
    return buckets[-1][0]


rng = random.Random(a.seed)
per_connection = a.rate / a.connections
latencies = []
for _ in range(a.connections):
    due = free = 0.0
    for _ in range(a.messages // a.connections):
        due += rng.expovariate(per_connection)
        start = max(due, free)
        free = start + service_time(rng)
        latencies.append(free - due)
latencies.sort()


def pct(p):
    return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6


print(f"{len(latencies)} messages, {a.connections} connections at {a.rate:.0f} msgs/s: "
      f"p50 {pct(0.5):.0f} p90 {pct(0.9):.0f} p99 {pct(0.99):.0f} p99.9 {pct(0.999):.0f} µs "
      f"(service drawn from {total:.0f} observations)")
