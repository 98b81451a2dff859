"""Drives the embedded registry with PyPI's py-consul client (module `consul`).

Usage: python3 test_py_consul.py [host:port]   (default: $CONSUL_HTTP_ADDR)
Exits 0 when every step behaves as it does against Consul.
"""

import os
import sys
import threading
import time

import consul


def address():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
    for prefix in ("http://", "https://"):
        if addr.startswith(prefix):
            addr = addr[len(prefix):]
    host, _, port = addr.rpartition(":")
    return host, int(port)


def main():
    host, port = address()
    c = consul.Consul(host=host, port=port)

    # status and agent self
    assert c.status.leader(), "no leader"
    assert c.agent.self()["Config"]["Datacenter"] == "dc1"

    # register with a TTL check, then pass it
    assert c.agent.service.register(
        "py-web", service_id="py-web-1", address="10.0.0.9", port=8080, tags=["a", "b"],
        check=consul.Check.ttl("30s"),
    )
    services = c.agent.services()
    assert services["py-web-1"]["Service"] == "py-web", services
    assert services["py-web-1"]["Port"] == 8080
    checks = c.agent.checks()
    assert checks["service:py-web-1"]["Status"] == "critical", checks

    index, nodes = c.health.service("py-web", passing=True)
    assert nodes == [], nodes
    assert int(index) >= 1
    assert c.agent.check.ttl_pass("service:py-web-1", notes="all good")
    index, nodes = c.health.service("py-web", passing=True)
    assert len(nodes) == 1, nodes
    assert nodes[0]["Service"]["ID"] == "py-web-1"
    statuses = {ch["CheckID"]: ch["Status"] for ch in nodes[0]["Checks"]}
    assert statuses == {"serfHealth": "passing", "service:py-web-1": "passing"}, statuses
    _, catalog = c.catalog.services()
    assert sorted(catalog["py-web"]) == ["a", "b"], catalog

    # KV put/get/cas
    assert c.kv.put("py/key", "v1")
    index, data = c.kv.get("py/key")
    assert data["Value"] == b"v1", data
    modify = data["ModifyIndex"]
    assert c.kv.put("py/key", "v2", cas=modify)
    assert not c.kv.put("py/key", "v3", cas=modify), "stale cas must fail"
    assert not c.kv.put("py/key", "v3", cas=0), "cas=0 on an existing key must fail"
    _, data = c.kv.get("py/key")
    assert data["Value"] == b"v2", data
    _, missing = c.kv.get("py/missing")
    assert missing is None

    # blocking read returns when a write happens
    index, _ = c.kv.get("py/key")

    def later():
        time.sleep(0.3)
        consul.Consul(host=host, port=port).kv.put("py/key", "v4")

    writer = threading.Thread(target=later)
    writer.start()
    started = time.monotonic()
    new_index, data = c.kv.get("py/key", index=index, wait="10s")
    elapsed = time.monotonic() - started
    writer.join()
    assert data["Value"] == b"v4", data
    assert int(new_index) > int(index)
    assert 0.2 <= elapsed < 5, elapsed

    # blocking health read wakes on deregistration
    index, _ = c.health.service("py-web")

    def dereg():
        time.sleep(0.3)
        consul.Consul(host=host, port=port).agent.service.deregister("py-web-1")

    writer = threading.Thread(target=dereg)
    writer.start()
    new_index, nodes = c.health.service("py-web", index=index, wait="10s")
    writer.join()
    assert nodes == [], nodes
    assert int(new_index) > int(index)
    assert "py-web-1" not in c.agent.services()

    # deregistering an unknown service is a 404, as in Consul (py-consul: False or an error)
    try:
        result = c.agent.service.deregister("py-web-1")
    except consul.ConsulException:
        result = False
    assert not result, "deregistering an unknown service must not succeed"

    print("py-consul: all checks passed")


if __name__ == "__main__":
    main()
