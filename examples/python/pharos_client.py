#!/usr/bin/env python3
"""Pharos example client: hash (and optionally match) every image of a folder over gRPC.

    python pharos_client.py [--target HOST:PORT] [--bank NAME ...] [--dihedral] FOLDER

This is meant to be copied into a crawler. It shows the pieces such a client needs:

* generating the gRPC code from ``proto/pharos/v1/pharos.proto`` at run time (``grpc_tools.protoc``), so no
  generated file has to be kept in sync with the daemon;
* one long-lived bidirectional stream (``Hasher.HashStream``, or ``Matcher.HashAndMatch`` with ``--bank``)
  fed by a generator, with a bounded number of images in flight, so memory stays flat however large the
  folder is (gRPC flow control does the rest);
* per-item errors arriving in-band (one bad file never breaks the stream), and stream-level errors
  (connection refused, deadline) reported once.

Output: one JSON object per image on stdout, in the shape ``pharos hash`` prints::

    {"path":"imgs/a.jpg","width":1600,"height":1004,"pdq":"f8f8…","quality":100,"phash":"aca29c1c33dc23d7"}

plus ``"matches":[{"bank":…,"id":…,"hash":…,"distance":…,"label":…}]`` with ``--bank``, and for an image the
daemon refused: ``{"path":"imgs/broken.jpg","error":"…","code":"INVALID_ARGUMENT"}`` (the gRPC status name; a file
that could not be read here, and so was never sent, gets ``"code":"LOCAL_IO"``).

Security: ``--ca FILE`` speaks TLS and trusts that CA for the daemon's certificate (``--tls`` trusts the
system's roots instead); ``--cert``/``--key`` present a client certificate (mutual TLS). A daemon started with
``--auth`` wants a bearer token: give it in ``$PHAROS_TOKEN`` (better than ``--token``, which other users of the
machine can read in the process list). The token is sent as ``authorization: Bearer …`` metadata and never
printed.

Exit status: 0 every image hashed, 2 some images failed (reported in-band), 1 usage or connection error (a
message on stderr). Image bytes are never printed or logged.

Needs: grpcio, grpcio-tools and protobuf (see requirements.txt).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import grpc

# What `pharos hash` walks: files with these extensions (any case); hidden files and folders are skipped.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}

# The proto folder of the Pharos repository this example lives in (override with --proto-dir).
DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"

# The part of the standard gRPC health-checking protocol (grpc.health.v1) this client uses. Writing these few
# lines here avoids a dependency on grpcio-health-checking; the field numbers are those of the standard.
HEALTH_PROTO = """\
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""


class UsageError(Exception):
    """A problem worth one line on stderr and exit status 1."""


# --------------------------------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------------------------------


def generate_modules(proto_dir: Path, with_health: bool):
    """Compiles the Pharos proto (and the health proto) with grpc_tools.protoc into a temporary folder and
    imports the generated modules. Returns (pharos_pb2, pharos_pb2_grpc, health_pb2, health_pb2_grpc); the
    health modules are None unless asked for."""
    from grpc_tools import protoc  # imported here: only this step needs grpcio-tools

    proto_file = proto_dir / "pharos" / "v1" / "pharos.proto"
    if not proto_file.is_file():
        raise UsageError(f"{proto_file} not found (point --proto-dir at the proto/ folder of Pharos)")
    # protoc's own copy of google/protobuf/*.proto, in case the contract ever imports a well-known type.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"

    with tempfile.TemporaryDirectory(prefix="pharos-proto-") as out:
        sources = [("pharos/v1/pharos.proto", proto_dir)]
        if with_health:
            # Named after this client, not grpc/health/v1/health.proto: the module path follows the file name,
            # and `grpc.health…` would be looked up inside the installed grpc package.
            health_dir = Path(out) / "health-src"
            health_dir.mkdir()
            (health_dir / "pharos_client_health.proto").write_text(HEALTH_PROTO)
            sources.append(("pharos_client_health.proto", health_dir))
        gen = Path(out) / "gen"
        gen.mkdir()
        for rel, include in sources:
            args = [
                "grpc_tools.protoc",
                f"-I{include}",
                f"-I{well_known}",
                f"--python_out={gen}",
                f"--grpc_python_out={gen}",
                rel,
            ]
            if protoc.main(args) != 0:
                raise UsageError(f"grpc_tools.protoc failed on {include / rel}")
        # The generated modules import each other as packages (`from pharos.v1 import pharos_pb2`): make the
        # output folder importable just long enough to load them (Python 3 needs no __init__.py files).
        sys.path.insert(0, str(gen))
        try:
            pb2 = importlib.import_module("pharos.v1.pharos_pb2")
            pb2_grpc = importlib.import_module("pharos.v1.pharos_pb2_grpc")
            health = health_grpc = None
            if with_health:
                health = importlib.import_module("pharos_client_health_pb2")
                health_grpc = importlib.import_module("pharos_client_health_pb2_grpc")
        finally:
            sys.path.remove(str(gen))
    return pb2, pb2_grpc, health, health_grpc


# --------------------------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------------------------


def image_files(folder: str) -> Iterator[str]:
    """Every image file under `folder`, recursively, sorted by name within each folder (the order `pharos hash`
    uses), hidden entries skipped. Paths are given as `folder` joined with the relative path."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise UsageError(f"cannot list {folder}: {e.strerror}") from e
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            yield from image_files(path)
        elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            yield path


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


def hashes_json(path: str, h) -> dict:
    """A `Hashes` message as the object `pharos hash` prints (same keys, same order)."""
    obj = {
        "path": path,
        "width": h.width,
        "height": h.height,
        "pdq": h.pdq_hex,
        "quality": h.quality,
        "phash": h.phash_hex,
    }
    if h.HasField("dihedral"):
        d = h.dihedral
        # `pharos hash --dihedral` prints these keys sorted by name.
        obj["dihedral"] = {
            "flipminus1": d.flipminus1,
            "flipplus1": d.flipplus1,
            "flipx": d.flipx,
            "flipy": d.flipy,
            "rot180": d.rot180,
            "rot270": d.rot270,
            "rot90": d.rot90,
        }
    return obj


def error_json(path: str, message: str, code: str) -> dict:
    return {"path": path, "error": message, "code": code}


def emit(obj: dict) -> None:
    # Compact separators, as `pharos hash` prints; flush so a consumer sees each line as it comes.
    print(json.dumps(obj, separators=(",", ":"), ensure_ascii=False), flush=True)


# --------------------------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------------------------


class Feeder:
    """Builds the request stream from a list of files, keeping at most `max_in_flight` requests unanswered.

    gRPC's Python client consumes the request iterator on a thread of its own, as fast as flow control lets
    it; the semaphore makes that thread wait until earlier images have been answered, so only a few images'
    bytes are ever held in memory. Files that cannot be read locally are not sent: they are recorded in
    `order` with their error, so the results still come out in folder order.
    """

    def __init__(self, files, make_request, max_in_flight: int):
        self.files = files
        self.make_request = make_request
        self.slots = threading.BoundedSemaphore(max_in_flight)
        self.stopped = threading.Event()
        # What the caller should expect next, in order: ("sent", path) or ("local", path, message).
        self.order: collections.deque = collections.deque()

    def requests(self):
        for path in self.files:
            try:
                path.encode("utf-8")  # the id is a proto string: it must be valid UTF-8
            except UnicodeEncodeError:
                shown = os.fsencode(path).decode("utf-8", "replace")  # printable, if not exact
                self.order.append(("local", shown, "file name is not valid UTF-8"))
                continue
            try:
                with open(path, "rb") as f:
                    image = f.read()
            except OSError as e:
                self.order.append(("local", path, f"cannot read: {e.strerror or e}"))
                continue
            # Wait for a free slot, but give up if the call has ended (error, deadline).
            while not self.slots.acquire(timeout=0.2):
                if self.stopped.is_set():
                    return
            if self.stopped.is_set():
                return
            # Recorded before the request leaves, so its response always finds it here.
            self.order.append(("sent", path))
            yield self.make_request(path, image)

    def answered(self) -> None:
        self.slots.release()

    def stop(self) -> None:
        self.stopped.set()


def run_stream(args, pb2, pb2_grpc, channel, files) -> int:
    """Streams `files` and prints one line per file. Returns the number of files that failed."""
    banks = args.bank or []
    if banks:
        stub = pb2_grpc.MatcherStub(channel)

        def make_request(path, image):
            req = pb2.HashAndMatchRequest(id=path, image=image, banks=banks, dihedral=args.dihedral)
            if args.radius is not None:
                req.radius = args.radius
            if args.min_quality is not None:
                req.min_quality = args.min_quality
            return req

        call_method = stub.HashAndMatch
    else:
        stub = pb2_grpc.HasherStub(channel)

        def make_request(path, image):
            return pb2.HashRequest(id=path, image=image, dihedral=args.dihedral)

        call_method = stub.HashStream

    feeder = Feeder(files, make_request, args.max_in_flight)
    failed = 0

    def flush_local_errors():
        nonlocal failed
        while feeder.order and feeder.order[0][0] == "local":
            _, path, message = feeder.order.popleft()
            emit(error_json(path, message, "LOCAL_IO"))
            failed += 1

    responses = call_method(feeder.requests(), timeout=args.timeout, metadata=call_metadata(args))
    try:
        for resp in responses:
            feeder.answered()
            flush_local_errors()
            expected = feeder.order.popleft()
            if expected[1] != resp.id:  # the daemon answers in request order, with the request's id
                raise UsageError(f"response for {resp.id!r} where {expected[1]!r} was expected")
            outcome = resp.WhichOneof("outcome")
            if outcome == "error":
                emit(error_json(resp.id, resp.error.message, resp.error.code_name or str(resp.error.code)))
                failed += 1
            elif banks:
                obj = hashes_json(resp.id, resp.result.hashes)
                obj["matches"] = [
                    {"bank": m.bank, "id": m.id, "hash": m.hash, "distance": m.distance, "label": m.label}
                    for m in resp.result.matches
                ]
                if resp.result.skipped:
                    obj["skipped"] = resp.result.skipped
                emit(obj)
            else:
                emit(hashes_json(resp.id, resp.hashes))
        flush_local_errors()  # unreadable files after the last one sent
    finally:
        feeder.stop()
        responses.cancel()  # a no-op when the call has completed
    return failed


def call_metadata(args):
    """The bearer token, as the daemon's auth layer expects it (none without a token)."""
    return [("authorization", f"Bearer {args.token}")] if args.token else None


def open_channel(args):
    """A TLS channel when --ca/--tls/--cert is given, else a plaintext one (loopback daemons)."""
    if not (args.ca or args.tls or args.cert):
        return grpc.insecure_channel(args.target)

    def read(path, what):
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise UsageError(f"{what} {path}: {e.strerror}") from None

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca, "--ca") if args.ca else None,
        private_key=read(args.key, "--key") if args.key else None,
        certificate_chain=read(args.cert, "--cert") if args.cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, creds, options=options)


def check_health(channel, health_pb2, health_grpc, service: str, timeout: float | None) -> None:
    """Asks the daemon's grpc.health.v1 service whether `service` ("" = the server as a whole) is serving."""
    stub = health_grpc.HealthStub(channel)
    for name in ("", service):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=timeout or 10)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise UsageError(f"health check: {name or 'server'} is {status}")
        print(f"pharos_client: health: {name or 'server'} is {status}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Hash (and match) every image of a folder with a Pharos daemon over gRPC; "
        "prints one JSON object per image, as `pharos hash` does.",
    )
    p.add_argument("folder", help="folder to walk recursively (hidden entries skipped)")
    p.add_argument("--target", default="127.0.0.1:50051", help="daemon address, HOST:PORT [%(default)s]")
    p.add_argument("--bank", action="append", metavar="NAME",
                   help="match against this bank (repeatable): uses HashAndMatch and adds \"matches\"")
    p.add_argument("--dihedral", action="store_true",
                   help="also compute the 7 PDQ dihedral variants (with --bank: match them too)")
    p.add_argument("--radius", type=int, help="largest match distance [daemon default: 31 PDQ, 10 pHash]")
    p.add_argument("--min-quality", type=int, help="do not match images whose PDQ quality is below this")
    p.add_argument("--timeout", type=float, help="deadline for the whole stream, in seconds [none]")
    p.add_argument("--max-in-flight", type=int, default=16,
                   help="images sent but not yet answered, at most [%(default)s]")
    p.add_argument("--check-health", action="store_true",
                   help="ask grpc.health.v1 whether the daemon is serving before streaming")
    p.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR,
                   help="the proto/ folder of Pharos [%(default)s]")
    p.add_argument("--ca", metavar="FILE", help="TLS: trust this CA certificate (PEM) for the daemon")
    p.add_argument("--tls", action="store_true", help="TLS with the system's trusted roots")
    p.add_argument("--cert", metavar="FILE", help="client certificate chain, PEM (mutual TLS; needs --key)")
    p.add_argument("--key", metavar="FILE", help="private key of --cert, PEM")
    p.add_argument("--server-name", metavar="NAME",
                   help="the name the daemon's certificate must carry, when --target is an address it lacks")
    p.add_argument("--token", default=os.environ.get("PHAROS_TOKEN") or None,
                   help="bearer token for a daemon with --auth [$PHAROS_TOKEN]")
    args = p.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")
    if args.max_in_flight < 1:
        p.error("--max-in-flight must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        p.error("--timeout must be positive")
    if args.bank is None and (args.radius is not None or args.min_quality is not None):
        p.error("--radius and --min-quality need --bank")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not os.path.isdir(args.folder):
            raise UsageError(f"{args.folder} is not a folder")
        pb2, pb2_grpc, health_pb2, health_grpc = generate_modules(args.proto_dir, args.check_health)
        files = list(image_files(args.folder))
        with open_channel(args) as channel:
            # Fail fast, with a clear message, when nothing listens at the target.
            try:
                grpc.channel_ready_future(channel).result(timeout=min(args.timeout or 10, 10))
            except grpc.FutureTimeoutError:
                raise UsageError(f"cannot connect to {args.target}") from None
            if args.check_health:
                service = "pharos.v1.Matcher" if args.bank else "pharos.v1.Hasher"
                check_health(channel, health_pb2, health_grpc, service, args.timeout)
            failed = run_stream(args, pb2, pb2_grpc, channel, files)
    except UsageError as e:
        print(f"pharos_client: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        # The stream (or the health check) failed as a whole: unreachable, deadline, unknown bank, shutdown…
        print(f"pharos_client: {args.target}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    print(f"pharos_client: {len(files)} images, {failed} failed", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
