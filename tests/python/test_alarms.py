"""python-socketio against the real gateway: acknowledge and shelve alarms, a shelve that
expires on its own, and an offline device suppressing its alarms."""

import time

import socketio

from test_gateway import wait_until


def operator(gw):
    sio = socketio.Client(reconnection=False)
    states = []
    sio.on("alarm:state", states.append)
    sio.connect(gw.url, transports=["websocket"], wait_timeout=10)
    sio.emit("subscribe-alerts")
    time.sleep(0.2)
    sio.states = states
    return sio


def transitions(sio, alarm_id):
    return [(s["transition"], s["state"]) for s in list(sio.states) if s["alarmId"] == alarm_id]


def test_ack_and_a_shelve_that_expires(gateway):
    # The device stays online through the minute (offline would suppress the alarm).
    gw = gateway(env={"EDGE_GATEWAY_DEVICES__OFFLINE_AFTER_MS": "600000"})
    sio = operator(gw)
    alarm_id = "py-1/temperature/threshold"
    gw.publish("sensors/py-1/temperature", "40")
    wait_until(lambda: transitions(sio, alarm_id), what="raise")
    reply = sio.call("alarm:ack", {"alarmId": alarm_id, "comment": "py"}, timeout=10)
    assert reply == {"success": True, "message": "Alarm acknowledged", "alarmId": alarm_id}
    reply = sio.call("alarm:shelve", {"alarmId": alarm_id, "minutes": 1, "reason": "test"}, timeout=10)
    assert reply["success"] is True, reply
    listed = sio.call("get:alarms", {"state": "shelved"}, timeout=10)
    assert [a["alarmId"] for a in listed["data"]] == [alarm_id]
    # The shortest shelve is a minute; it ends by itself, back to active and unacknowledged.
    wait_until(lambda: ("shelve_expired", "active_unacked") in transitions(sio, alarm_id),
               timeout=120, what="the shelve to expire")
    assert transitions(sio, alarm_id) == [
        ("raise", "active_unacked"),
        ("ack", "active_acked"),
        ("shelve", "shelved"),
        ("shelve_expired", "active_unacked"),
    ]
    bad = sio.call("alarm:unshelve", {"alarmId": alarm_id}, timeout=10)
    assert bad["success"] is False and bad["message"] == "Alarm action refused", bad
    sio.disconnect()


def test_an_offline_device_suppresses_its_alarms(gateway):
    gw = gateway()
    sio = operator(gw)
    alarm_id = "py-2/temperature/threshold"
    gw.publish("sensors/py-2/temperature", "46")
    wait_until(lambda: transitions(sio, alarm_id), what="raise")
    gw.publish("devices/py-2/status", "offline")
    wait_until(lambda: ("suppress", "suppressed") in transitions(sio, alarm_id), what="suppress")
    reply = sio.call("alarm:ack", {"alarmId": alarm_id}, timeout=10)
    assert reply["success"] is False, reply
    # Data again: the device is back online and its alarm returns.
    gw.publish("sensors/py-2/temperature", "47")
    wait_until(lambda: ("unsuppress", "active_unacked") in transitions(sio, alarm_id), what="unsuppress")
    sio.disconnect()
