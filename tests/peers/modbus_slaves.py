#!/usr/bin/env python3
"""Modbus slaves for the field-device tests.

Every register holds a value that names its slave and address, so a value attributed to the
wrong slave or register is visible: holding register a of unit u = u*1000 + a, input register
a = u*1000 + a + 500 (mod 65536).

  --tcp PORT              pymodbus TCP server on 127.0.0.1:PORT serving --units
  --rtu PATH              pymodbus RTU server on serial port PATH serving --units; other
                          unit ids get no answer (dead slaves)
  --rtu PATH --raw        a small RTU responder of our own on PATH for faulty slaves:
                          --slow U:MS  unit U answers every 4th request MS ms late, while
                                       the others go on answering (the late reply lands
                                       in the middle of later requests)
                          --bad-crc U  unit U corrupts the CRC of every other reply
                          --dead U     unit U never answers
Prints "ready" on stdout once serving.
"""
import argparse
import asyncio
import os
import sys
import termios
import threading
import tty

N = 200


def holding(unit, a):
    return (unit * 1000 + a) % 65536


def inputs(unit, a):
    return (unit * 1000 + a + 500) % 65536


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def pymodbus_context(units):
    from pymodbus.datastore import (ModbusDeviceContext, ModbusSequentialDataBlock,
                                    ModbusServerContext)
    devices = {}
    for u in units:
        # pymodbus numbers data blocks from 1 (register 1 = protocol address 0).
        hr = ModbusSequentialDataBlock(1, [holding(u, a) for a in range(N)])
        ir = ModbusSequentialDataBlock(1, [inputs(u, a) for a in range(N)])
        co = ModbusSequentialDataBlock(1, [a % 3 == 0 for a in range(N)])
        di = ModbusSequentialDataBlock(1, [a % 2 == 0 for a in range(N)])
        devices[u] = ModbusDeviceContext(hr=hr, ir=ir, co=co, di=di)
    return ModbusServerContext(devices=devices, single=False)


async def serve_pymodbus(args, units):
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    ctx = pymodbus_context(units)

    def drop_unknown_units(sending, data):
        # pymodbus answers unknown unit ids with an exception; a dead slave says nothing.
        if not sending and data and data[0] not in units:
            return b""
        return data

    if args.tcp:
        server = ModbusTcpServer(ctx, address=("127.0.0.1", args.tcp),
                                 ignore_missing_devices=True)
    else:
        server = ModbusSerialServer(ctx, port=args.rtu, baudrate=9600,
                                    ignore_missing_devices=True,
                                    trace_packet=drop_unknown_units)
    import warnings
    warnings.simplefilter("ignore")
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    if task.done():
        # Failed to listen (e.g. pymodbus without pyserial): say why and exit, never "ready".
        task.result()
        sys.exit("pymodbus server stopped at start")
    print("ready", flush=True)
    await task


def serve_raw(args, units):
    slow = {}
    for s in args.slow or []:
        u, ms = s.split(":")
        slow[int(u)] = int(ms) / 1000.0
    bad_crc = set(args.bad_crc or [])
    dead = set(args.dead or [])
    count = {}
    fd = os.open(args.rtu, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    termios.tcflush(fd, termios.TCIOFLUSH)
    print("ready", flush=True)
    buf = b""
    while True:
        chunk = os.read(fd, 256)
        if not chunk:
            return
        buf += chunk
        # Requests for FC 1-4 are 8 bytes; resynchronise on a bad CRC by dropping a byte.
        while len(buf) >= 8:
            req, rest = buf[:8], buf[8:]
            if crc16(req[:6]) != int.from_bytes(req[6:8], "little"):
                buf = buf[1:]
                continue
            buf = rest
            unit, fc = req[0], req[1]
            addr = int.from_bytes(req[2:4], "big")
            qty = int.from_bytes(req[4:6], "big")
            if unit in dead or unit not in units:
                continue
            n = count[unit] = count.get(unit, 0) + 1
            if fc in (3, 4) and addr + qty <= N:
                f = holding if fc == 3 else inputs
                data = b"".join(f(unit, a).to_bytes(2, "big") for a in range(addr, addr + qty))
                reply = frame(bytes([unit, fc, len(data)]) + data)
            elif fc in (3, 4):
                reply = frame(bytes([unit, fc | 0x80, 2]))
            else:
                reply = frame(bytes([unit, fc | 0x80, 1]))
            if unit in bad_crc and n % 2 == 1:
                reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
            if unit in slow and n % 4 == 1:
                threading.Timer(slow[unit], os.write, (fd, reply)).start()
                continue
            os.write(fd, reply)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp", type=int)
    p.add_argument("--rtu")
    p.add_argument("--raw", action="store_true")
    p.add_argument("--units", default="1")
    p.add_argument("--slow", action="append")
    p.add_argument("--bad-crc", type=int, action="append")
    p.add_argument("--dead", type=int, action="append")
    args = p.parse_args()
    units = [int(u) for u in args.units.split(",") if u]
    if args.raw:
        serve_raw(args, set(units))
    else:
        asyncio.run(serve_pymodbus(args, units))


if __name__ == "__main__":
    sys.exit(main())
