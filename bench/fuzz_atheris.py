"""Coverage-guided fuzzing (atheris/libFuzzer) of what the backend accepts from the network; outside CI.

Targets:
  decode  - wire.decode on signed frames built from the input (header JSON, buffer descriptors, frames)
  params  - every product op's OpSpec.validate on a JSON object from the input
  server  - the input as signed frames to a live server; every 500 inputs a ping must be answered (no hang)

    .venv/bin/pip install atheris==2.3.0
    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz_atheris.py decode -atheris_runs=2000000
    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz_atheris.py server -max_total_time=300

A crash is any exception other than ProtocolError/SignatureError (decode), OpError (params), or a dead or
silent server. libFuzzer prints the executions ("#N DONE") and writes any crashing input to crash-*.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports():
    from backend.ops import OpError, product_registry
    from protocol import wire
    from protocol.errors import ProtocolError

KEY = b"f" * 64
SPECS = [product_registry().get(n).spec for n in product_registry().names()]
COUNT = {"n": 0}


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 2 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**40), 2**40)
    if kind == 3:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()  # NaN/inf too
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if kind == 5:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys = ("role", "width", "height", "channels", "dtype", "order", "stride", "x", "y", "strength", "steps")
    n = fdp.ConsumeIntInRange(0, 4)
    return {keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]: _value(fdp, depth + 1) for _ in range(n)}


def _header(fdp: atheris.FuzzedDataProvider) -> bytes:
    """Raw bytes half the time; otherwise a JSON header of plausible shape with fuzzed fields (deeper code)."""
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
    header: dict = {"protocol": "1.0" if fdp.ConsumeBool() else _value(fdp)}
    for key in ("type", "id", "job", "parent", "op", "params", "content", "buffers"):
        if fdp.ConsumeBool():
            header[key] = _value(fdp)
    types = sorted(wire.CLIENT_TYPES)
    if fdp.ConsumeBool():
        header["type"] = types[fdp.ConsumeIntInRange(0, len(types) - 1)]
    if fdp.ConsumeBool():
        header["buffers"] = [_value(fdp, 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return json.dumps(header).encode()


def _frames(fdp: atheris.FuzzedDataProvider) -> list[bytes]:
    header = _header(fdp)
    buffers = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return [wire.DELIMITER, wire.sign(KEY, header, buffers), header, *buffers]


def decode_target(data: bytes) -> None:
    COUNT["n"] += 1
    try:
        wire.decode(_frames(atheris.FuzzedDataProvider(data)), KEY)
    except ProtocolError:
        pass


def params_target(data: bytes) -> None:
    """A params object for a random product op: its own parameter names (and a bogus one) with fuzzed values."""
    COUNT["n"] += 1
    fdp = atheris.FuzzedDataProvider(data)
    spec = SPECS[fdp.ConsumeIntInRange(0, len(SPECS) - 1)]
    names = [p.name for p in spec.params] + ["bogus"]
    params = {
        names[fdp.ConsumeIntInRange(0, len(names) - 1)]: _value(fdp)
        for _ in range(fdp.ConsumeIntInRange(0, 6))
    }
    try:
        checked = spec.validate(params)
    except OpError:
        return
    for p in spec.params:  # what an op would get satisfies the schema
        value = checked[p.name]
        if p.type in ("int", "float") and value is not None:
            assert (p.min is None or value >= p.min) and (p.max is None or value <= p.max), (p.name, value)


def server_target_factory():
    import zmq

    from backend.server import Server, ServerConfig
    from protocol import connection
    from protocol.client import Client
    from tests.reliability_support import registry

    tmp = Path(tempfile.mkdtemp(prefix="layeredit-fuzz-"))
    cfg = ServerConfig(connection_file=tmp / "backend.json", report_models=False, max_queue=100_000)
    srv = Server(cfg, registry(), models_factory=None).start()
    info = connection.read(srv.connection_file)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(info.endpoint)
    probe = Client(info, token="probe")

    def target(data: bytes) -> None:
        COUNT["n"] += 1
        fdp = atheris.FuzzedDataProvider(data)
        header = _header(fdp)
        buffers = [
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) for _ in range(fdp.ConsumeIntInRange(0, 3))
        ]
        sock.send_multipart([wire.DELIMITER, wire.sign(info.key_bytes, header, buffers), header, *buffers])
        while sock.poll(0):
            sock.recv_multipart()
        if COUNT["n"] % 500 == 0:
            probe.ping(timeout=10)  # raises (a crash for libFuzzer) if the server hangs or died
            assert srv._thread is not None and srv._thread.is_alive()

    return target


def main() -> None:
    target = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "decode"
    fn = {"decode": decode_target, "params": params_target}.get(target) or server_target_factory()
    atheris.Setup(sys.argv, fn)
    try:
        atheris.Fuzz()
    finally:
        print(f"{target}: {COUNT['n']} inputs tried", file=sys.stderr)


if __name__ == "__main__":
    main()
