"""Several workers behind one bot identity, sharing one Redis (opt-in: `[cluster] redis_url`).

Why Redis, and why this split:
- The broker spreads the load: each worker subscribes through an MQTT 5 shared subscription
  (`$share/<group>/...`), so mosquitto hands each uplinked copy to one worker of the group.
- The broker cannot make "answered exactly once" true on its own: two gateways uplink the same packet as
  two messages, which can reach two workers. Redis gives the atomic claim that decides (`SET NX PX` on
  the packet's (sender, id)), and a durable work log with leases (a stream with a consumer group:
  an accepted question is a pending entry owned by its worker; the owner renews it; `XAUTOCLAIM` lets
  another worker take it over once it has gone silent for `lease_s`).
- Redis is well-kept infrastructure with exactly these primitives; a home-made protocol over the broker
  would need its own consensus. One worker needs none of it: with `redis_url` unset nothing here runs.

Modules: shared.py (the connection, claims, keys, identity, ACK forwarding, heartbeats),
worklog.py (the stream of accepted questions and their fragments), ledger.py (the daemon's ledger
mirrored into the work log), custodian.py (leases, takeover, hand-back at shutdown), budgets.py (rate limits
and air time for the bot), memory.py (conversation memory every worker reads and writes).
"""
