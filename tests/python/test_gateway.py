"""python-socketio against the real gateway: readings over QoS 0 and 1, history across restarts,
kill -9 durability, and the simulator."""

import subprocess
import threading
import time

import pytest
import socketio


def client(gw, subscribe=("subscribe-all-devices",), transports=None, auth=None):
    sio = socketio.Client(reconnection=False)
    events = {"sensor:all": [], "device:all": [], "welcome": [], "resume:done": []}
    lock = threading.Lock()

    def record(name):
        def handler(data):
            with lock:
                events[name].append(data)
        return handler

    for name in events:
        sio.on(name, record(name))
    sio.connect(gw.url, transports=transports or ["websocket"], wait_timeout=10, auth=auth)
    for event in subscribe:
        sio.emit(event)
    time.sleep(0.2)
    sio.events = events
    sio.lock = lock
    return sio


def wait_until(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def history(sio, **params):
    reply = sio.call("get:history", params, timeout=10)
    assert reply["success"] is True, reply
    return reply["data"]


def test_readings_qos0_and_qos1_reach_python_socketio(gateway):
    gw = gateway()
    sio = client(gw, transports=["polling"])
    assert sio.events["welcome"] and sio.events["welcome"][0]["message"]
    gw.publish("sensors/py-1/temperature", {"value": 21.25, "unit": "°C", "location": "Hall B"}, qos=0)
    gw.publish("sensors/py-1/temperature", "22.5", qos=1)
    wait_until(lambda: len(sio.events["sensor:all"]) == 2, what="two readings")
    first, second = sio.events["sensor:all"]
    assert (first["value"], second["value"]) == (21.25, 22.5)
    assert first["location"] == second["location"] == "Hall B"
    assert first["gatewayId"] == "pytest-gw" and second["seq"] > first["seq"]
    assert [d["status"] for d in sio.events["device:all"]] == ["online"]
    sio.disconnect()


def test_history_after_a_clean_restart(gateway):
    gw = gateway()
    for i in range(10):
        gw.publish("sensors/py-r/humidity", str(40 + i), qos=1)
    sio = client(gw, subscribe=())
    wait_until(lambda: len(history(sio, deviceId="py-r")) == 10, what="10 stored readings")
    sio.disconnect()
    assert gw.stop() == 0
    gw2 = gateway()
    sio = client(gw2, subscribe=())
    data = history(sio, deviceId="py-r", sensorType="humidity")
    assert [d["value"] for d in data] == [40.0 + i for i in range(10)]
    sio.disconnect()


def test_resume_from_the_last_seq_seen(gateway):
    """A client that reconnects with `auth.after` gets what it missed, in order, then live."""
    gw = gateway()
    ref = client(gw)
    a = client(gw)
    for i in range(10):
        gw.publish("sensors/py-res/temperature", str(i), qos=1)
    wait_until(lambda: len(a.events["sensor:all"]) == 10, what="10 readings")
    last = a.events["sensor:all"][-1]["seq"]
    a.disconnect()
    for i in range(10, 40):
        gw.publish("sensors/py-res/temperature", str(i), qos=1)
    wait_until(lambda: len(ref.events["sensor:all"]) == 40, what="40 readings")
    b = client(gw, auth={"after": last})
    gw.publish("sensors/py-res/temperature", "40", qos=1)
    wait_until(lambda: len(ref.events["sensor:all"]) == 41, what="the live reading")
    wait_until(lambda: len(b.events["sensor:all"]) >= 31, what="the missed and live readings")
    seqs = [r["seq"] for r in b.events["sensor:all"]]
    firsts = list(dict.fromkeys(seqs))
    assert firsts == [r["seq"] for r in ref.events["sensor:all"][10:]]
    assert [r["value"] for r in b.events["sensor:all"][:30]] == [float(i) for i in range(10, 40)]
    assert b.events["resume:done"] and b.events["resume:done"][0]["seq"] >= seqs[29]
    for sio in (ref, b):
        sio.disconnect()


@pytest.mark.parametrize("durable_every_commit", [True, False])
def test_kill_9_loses_nothing_that_was_broadcast(gateway, durable_every_commit):
    """With store.durable_commit_interval_ms = 0 readings are broadcast only after their
    commit: every one a dashboard saw must be in history after kill -9 and a restart, exactly
    once. With the default cadence readings are broadcast when staged, before their commit: the
    last ones may be gone, but no seq a dashboard saw is given to a different reading."""
    env = {"EDGE_GATEWAY_STORE__DURABLE_COMMIT_INTERVAL_MS": "0"} if durable_every_commit else {}
    gw = gateway(env=env)
    sio = client(gw)
    stop = threading.Event()

    def publish_stream():
        # One mosquitto_pub process publishing one message per stdin line at QoS 1.
        p = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(gw.mqtt_port), "-q", "1",
             "-t", "sensors/kill-dev/vibration", "-l"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for i in range(100_000):
                if stop.is_set():
                    break
                p.stdin.write(f"{i}\n".encode())
                p.stdin.flush()
                time.sleep(0.0005)
        except BrokenPipeError:
            pass
        finally:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.kill()

    t = threading.Thread(target=publish_stream)
    t.start()
    wait_until(lambda: len(sio.events["sensor:all"]) >= 1500, timeout=30, what="1500 broadcast readings")
    gw.kill9()
    stop.set()
    t.join()
    try:
        sio.disconnect()
    except Exception:
        pass
    with sio.lock:
        seen = {(r["seq"], r["value"]) for r in sio.events["sensor:all"]}
    assert len(seen) >= 1500

    gw2 = gateway(env=env)
    sio2 = client(gw2, subscribe=())
    for i in range(10):
        gw2.publish("sensors/kill-dev/vibration", str(1_000_000 + i), qos=1)
    wait_until(lambda: len([r for r in history(sio2, deviceId="kill-dev", limit=10000)
                            if r["value"] >= 1_000_000]) == 10, what="readings after restart")
    stored = history(sio2, deviceId="kill-dev", limit=10000)
    stored_pairs = [(r["seq"], r["value"]) for r in stored]
    assert len(stored_pairs) == len(set(stored_pairs)), "no duplicates"
    seen_value = dict(seen)
    reused = [(q, v) for q, v in stored_pairs if q in seen_value and seen_value[q] != v]
    assert not reused, f"seqs a dashboard saw were reused: {reused[:5]}"
    missing = seen - set(stored_pairs)
    if durable_every_commit:
        assert not missing, f"{len(missing)} broadcast readings lost, e.g. {sorted(missing)[:5]}"
    values = [v for _, v in stored_pairs]
    assert values == sorted(values), "per-device order kept"
    sio2.disconnect()


def test_simulator_publishes_through_mqtt(gateway):
    gw = gateway(env={"EDGE_GATEWAY_SIMULATOR__INTERVAL_MS": "100"}, args=["--simulate", "5"])
    sio = client(gw)
    wait_until(
        lambda: len({r["deviceId"] for r in sio.events["sensor:all"]}) == 5, timeout=10, what="5 devices"
    )
    with sio.lock:
        devices = {r["deviceId"] for r in sio.events["sensor:all"]}
        sensor_types = {r["sensorType"] for r in sio.events["sensor:all"]}
    assert devices == {f"sim-device-00{i}" for i in range(1, 6)}
    assert {"temperature", "humidity", "pressure", "vibration"} <= sensor_types
    # History holds committed readings: it lags live events by up to one commit interval.
    wait_until(lambda: history(sio, deviceId="sim-device-001"), timeout=10, what="history")
    data = history(sio, deviceId="sim-device-001")
    assert data and all(r["deviceId"] == "sim-device-001" for r in data)
    sio.disconnect()
