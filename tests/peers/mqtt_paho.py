"""paho-mqtt peers for tests/mqtt_listener.rs (real clients against the gateway's listener).

usage: mqtt_paho.py MODE PORT VERSION(3|5) DEVICE
  lwt      connect with a last will `devices/DEVICE/status` = offline, publish one QoS 1
           reading, wait for its PUBACK, then die without DISCONNECT (os._exit).
  persist  persistent session (clean_session/clean_start off); publish 50 QoS 1 readings
           (values 0..49), dropping the socket abruptly after every 10th; reconnect each time
           and let paho resend what was not acknowledged. Prints `acked N` and exits 0 once
           every publish was acknowledged.
"""

import os
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt


def client(version, client_id, clean):
    proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    kwargs = {"client_id": client_id, "protocol": proto}
    if proto == mqtt.MQTTv311:
        kwargs["clean_session"] = clean
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)


def connect(c, port, version, clean):
    if version == "5":
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=props)
    else:
        c.connect("127.0.0.1", port, keepalive=30)


def lwt(port, version, device):
    c = client(version, f"lwt-{device}", True)
    c.will_set(f"devices/{device}/status", "offline", qos=1)
    connect(c, port, version, True)
    c.loop_start()
    info = c.publish(f"sensors/{device}/temperature", "21.5", qos=1)
    info.wait_for_publish(timeout=10)
    assert info.is_published(), "PUBACK"
    print("published", flush=True)
    os._exit(0)


def persist(port, version, device):
    acked = set()
    lock = threading.Lock()

    def on_publish(_c, _u, mid, _rc=None, _props=None):
        with lock:
            acked.add(mid)

    c = client(version, f"persist-{device}", False)
    c.on_publish = on_publish
    c.max_inflight_messages_set(20)
    connect(c, port, version, False)
    c.loop_start()
    mids = []
    for i in range(50):
        mids.append(c.publish(f"sensors/{device}/temperature", str(i), qos=1).mid)
        if i % 10 == 9:
            # Abrupt: the gateway sees the socket go, paho sees a lost connection and
            # reconnects with its unacknowledged publishes marked DUP.
            deadline = time.time() + 10
            while not c.is_connected() and time.time() < deadline:
                time.sleep(0.01)
            sock = c.socket()
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            time.sleep(0.3)
    deadline = time.time() + 20
    while time.time() < deadline:
        with lock:
            if all(m in acked for m in mids):
                break
        time.sleep(0.05)
    with lock:
        n = sum(1 for m in mids if m in acked)
    print(f"acked {n}", flush=True)
    c.disconnect()
    c.loop_stop()
    sys.exit(0 if n == len(mids) else 1)


if __name__ == "__main__":
    mode, port, version, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    {"lwt": lwt, "persist": persist}[mode](port, version, device)
