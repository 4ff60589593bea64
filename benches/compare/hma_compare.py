#!/usr/bin/env python3
"""Pharos's HMA-compatible HTTP API side by side with a real HMA ("OpenMediaMatch") server.

Run through hma.sh (see README.md here). Both servers must already be running: this script never
installs, starts or configures either of them. Standard library only (plus `wrk` for the throughput
phase and `psql` for the optional bulk load into HMA's database).

Phases (--phases, default load,compare,bench):

  load     creates the same banks on both servers through their curation APIs and adds the same PDQ
           signals: the corpus's PDQ hashes (pdq_hex_cpp of expected.tsv, distinct), --random N seeded
           random hashes (one POST /c/bank/NAME/signal each), and optionally --big N more (one by one,
           or with --bulk: SQL straight into HMA's tables, Pharos's bulk endpoint when it has one).
           What was loaded, how, how fast, and every content id each side gave back are written to
           OUT/hma-state.json.
  compare  waits until each side's index answers for every bank, replays the same requests to both
           and compares status codes, Content-Type and JSON bodies after normalising content ids
           (each side's id -> the signal it was created with). Every difference is kept.
  bench    throughput of GET /m/raw_lookup (random hashes) and POST /h/hash (corpus images) with wrk
           at each --clients count, Pharos / HMA ratios.

Output: OUT/hma.md (Markdown section), OUT/hma.json (everything), OUT/hma-diffs.txt (every difference
in full). OUT defaults to target/compare.
"""

import argparse
import base64
import collections
import concurrent.futures
import csv
import datetime
import http.client
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# HTTP


class Resp:
    __slots__ = ("status", "ctype", "body", "json", "seconds")

    def __init__(self, status, ctype, body, seconds):
        self.status = status
        self.ctype = ctype
        self.body = body
        self.seconds = seconds
        self.json = None
        if ctype.split(";")[0].strip() == "application/json":
            try:
                self.json = json.loads(body)
            except ValueError:
                pass

    def short(self, limit=600):
        if self.json is not None:
            text = json.dumps(self.json, sort_keys=True, separators=(",", ":"))
        else:
            text = self.body.decode("utf-8", "replace")
        if len(text) > limit:
            text = text[:limit] + f"... ({len(text)} chars)"
        return f"{self.status} [{self.ctype.split(';')[0] or '-'}] {text}"


class Server:
    """One server: base URL, optional bearer token, one keep-alive connection per thread."""

    def __init__(self, name, url, token=None):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise SystemExit(f"{name}: only http:// URLs are supported ({url})")
        self.name = name
        self.url = url.rstrip("/")
        self.host = u.hostname
        self.port = u.port or 80
        self.prefix = u.path.rstrip("/")
        self.token = token
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=300)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, headers=None, json_body=None):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(3):
            c = self._conn()
            t = time.perf_counter()
            try:
                c.request(method, self.prefix + path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                seconds = time.perf_counter() - t
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                return Resp(r.status, r.getheader("Content-Type", ""), data, seconds)
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                c.close()
                self.local.conn = None
                if attempt == 2:
                    log(f"{self.name}: {method} {path[:120]}: {e!r}")
                    return Resp(0, "", f"connection error: {e!r}".encode(), time.perf_counter() - t)
                time.sleep(0.2 * (attempt + 1))


def multipart(fields):
    """fields: list of (name, filename or None, bytes). Returns (body, content-type)."""
    boundary = "----pharos-hma-compare-" + base64.b32encode(os.urandom(10)).decode().lower()
    out = bytearray()
    for name, filename, data in fields:
        out += f"--{boundary}\r\n".encode()
        if filename is None:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        else:
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def q(**params):
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


# --------------------------------------------------------------------------------------------------
# Data


def read_corpus(corpus):
    with open(os.path.join(corpus, "expected.tsv"), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        r["abspath"] = os.path.join(corpus, r["path"])
    return rows


def distinct(seq):
    seen = set()
    out = []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def random_hashes(n, seed):
    rng = random.Random(seed)
    return [f"{rng.getrandbits(256):064x}" for _ in range(n)]


def flip_bits(h, k, rng):
    v = int(h, 16)
    for b in rng.sample(range(256), k):
        v ^= 1 << b
    return f"{v:064x}"


def hamming(a, b):
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def bank_specs(args, corpus_rows):
    p = args.bank_prefix
    specs = [{"name": f"{p}CORPUS", "what": "corpus pdq_hex_cpp (distinct)", "n": None,
              "signals": distinct(r["pdq_hex_cpp"] for r in corpus_rows), "method": "api"}]
    if args.random:
        specs.append({"name": f"{p}RANDOM", "what": f"random PDQ, seed {args.seed}", "n": args.random,
                      "seed": args.seed, "method": "api"})
    if args.big:
        specs.append({"name": f"{p}BIG", "what": f"random PDQ, seed {args.seed + 1}", "n": args.big,
                      "seed": args.seed + 1, "method": "bulk" if args.bulk else "api"})
    for s in specs:
        if "signals" in s:
            s["n"] = len(s["signals"])
    return specs


def spec_signals(spec):
    if "signals" in spec:
        return spec["signals"]
    return random_hashes(spec["n"], spec["seed"])


# --------------------------------------------------------------------------------------------------
# Load


def create_bank(srv, name, reset):
    if reset:
        r = srv.request("DELETE", f"/c/bank/{name}")
        if r.status not in (200, 204, 404):
            log(f"  {srv.name}: DELETE /c/bank/{name} -> {r.short()}")
    r = srv.request("POST", "/c/banks", json_body={"name": name})
    if r.status == 403 and not reset:
        raise SystemExit(f"{srv.name}: bank {name} already exists ({r.short()}); pass --reset to delete it first")
    if r.status != 201:
        raise SystemExit(f"{srv.name}: POST /c/banks {name} -> {r.short()}")
    return r


def add_one_by_one(srv, name, signals, concurrency):
    ids = [None] * len(signals)
    errors = []

    def one(i):
        r = srv.request("POST", f"/c/bank/{name}/signal", json_body={"pdq": signals[i]})
        if r.status != 200 or not isinstance(r.json, dict) or "id" not in r.json:
            errors.append((i, r.short()))
            return
        ids[i] = r.json["id"]
        got = r.json.get("signals", {}).get("pdq")
        if got != signals[i]:
            errors.append((i, f"signal echoed as {got!r}"))

    t = time.perf_counter()
    done = 0
    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        for _ in ex.map(one, range(len(signals))):
            done += 1
            if done % 5000 == 0:
                log(f"    {srv.name} {name}: {done}/{len(signals)} "
                    f"({done / (time.perf_counter() - t):.0f}/s)")
    secs = time.perf_counter() - t
    if errors:
        raise SystemExit(f"{srv.name}: {len(errors)} signals failed to load into {name}, first: {errors[:3]}")
    return ids, secs, f"POST /c/bank/{name}/signal, one signal per request, {concurrency} concurrent clients"


def hma_bulk_sql(dsn, name, signals):
    """Inserts rows straight into HMA's bank_content and content_signal tables (its SQLAlchemy models in
    storage/postgres/database.py): one bank_content row per signal (disable_until_ts = 1, i.e. enabled,
    no note/metadata/original URI), one content_signal row (signal_type 'pdq', create_time now()), ids
    from HMA's own bank_content_id_seq. Returns the ids in the order of `signals`."""
    if not shutil.which("psql"):
        raise SystemExit("--bulk for HMA needs psql (apt-get install postgresql-client)")
    name_sql = name.replace("'", "''")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\\set ON_ERROR_STOP on\nBEGIN;\n"
                "CREATE TEMP TABLE cmp_load (ord integer PRIMARY KEY, val text NOT NULL, id integer) ON COMMIT DROP;\n"
                "COPY cmp_load (ord, val) FROM STDIN;\n")
        for i, s in enumerate(signals):
            f.write(f"{i}\t{s}\n")
        f.write("\\.\n"
                "UPDATE cmp_load SET id = nextval('bank_content_id_seq');\n"
                "INSERT INTO bank_content (id, bank_id, disable_until_ts) "
                f"SELECT c.id, b.id, 1 FROM cmp_load c, bank b WHERE b.name = '{name_sql}' ORDER BY c.id;\n"
                "INSERT INTO content_signal (content_id, signal_type, signal_val, create_time) "
                "SELECT id, 'pdq', val, now() FROM cmp_load ORDER BY id;\n"
                "COPY (SELECT ord, id FROM cmp_load ORDER BY ord) TO STDOUT;\n"
                "COMMIT;\nANALYZE bank_content;\nANALYZE content_signal;\n")
        script = f.name
    try:
        with open(script) as stdin:
            out = subprocess.run(["psql", "-X", "-q", "-A", "-t", dsn], stdin=stdin, capture_output=True,
                                 text=True)
    finally:
        os.unlink(script)
    if out.returncode != 0:
        raise SystemExit(f"HMA bulk load failed: {out.stderr.strip()}")
    ids = [None] * len(signals)
    for line in out.stdout.splitlines():
        if "\t" in line:
            o, i = line.split("\t")
            ids[int(o)] = int(i)
    if any(i is None for i in ids):
        raise SystemExit("HMA bulk load: not every row came back with an id")
    return ids


def openapi(srv):
    for path in ("/openapi.json", "/openapi/openapi.json"):
        r = srv.request("GET", path)
        if r.status == 200 and isinstance(r.json, dict):
            return path, r.json
    return None, None


def pharos_bulk_path(srv):
    """The path template of a bulk signal endpoint in the server's OpenAPI document, if any."""
    _, doc = openapi(srv)
    if not doc:
        return None, None
    for path, ops in doc.get("paths", {}).items():
        if "post" in ops and re.fullmatch(r"/c/bank/\{[^}]+\}/signals", path):
            return path, ops["post"]
    return None, None


def pharos_bulk(srv, name, signals, chunk):
    """POST /c/bank/NAME/signals with `chunk` signals per request. The request is
    {"signals": [{"pdq": "..."}, ...]} (or, if the server refuses that, a bare JSON list of the same
    objects), the answer a list of {"id": N, ...} in the same order (or an object with such a list under
    "items"/"contents"/"results")."""
    ids = []
    wrap = True
    for start in range(0, len(signals), chunk):
        part = signals[start:start + chunk]
        items = [{"pdq": s} for s in part]
        r = srv.request("POST", f"/c/bank/{name}/signals", json_body={"signals": items} if wrap else items)
        if start == 0 and r.status in (400, 415, 422):
            wrap = False
            r = srv.request("POST", f"/c/bank/{name}/signals", json_body=items)
        body = r.json
        if isinstance(body, dict):
            for k in ("items", "contents", "results", "signals", "added"):
                if isinstance(body.get(k), list):
                    body = body[k]
                    break
        if r.status not in (200, 201) or not isinstance(body, list) or len(body) != len(part):
            raise SystemExit(f"{srv.name}: bulk POST /c/bank/{name}/signals -> {r.short()}")
        for s, item in zip(part, body):
            if not isinstance(item, dict) or "id" not in item:
                raise SystemExit(f"{srv.name}: bulk answer item without id: {item!r}")
            got = item.get("signals", {}).get("pdq", s) if isinstance(item.get("signals"), dict) else s
            if got != s:
                raise SystemExit(f"{srv.name}: bulk answer out of order: {got} for {s}")
            ids.append(item["id"])
        if (start // chunk) % 20 == 0:
            log(f"    {srv.name} {name}: {start + len(part)}/{len(signals)}")
    return ids


def phase_load(args, servers, corpus_rows, state):
    specs = bank_specs(args, corpus_rows)
    old = {b["name"]: b for b in state.get("banks", [])}
    state["banks"] = []
    for spec in specs:
        signals = spec_signals(spec)
        entry = {k: v for k, v in spec.items() if k != "signals"}
        if "signals" in spec and len(spec["signals"]) <= 100_000:
            entry["signals"] = spec["signals"]
        entry["sides"] = {}
        prev = old.get(spec["name"])
        if prev is not None:
            # --load-sides: keep what an earlier run loaded into the other side, if it loaded the same.
            same = (prev["n"] == spec["n"] and prev.get("seed") == spec.get("seed")
                    and prev.get("signals", entry.get("signals")) == entry.get("signals"))
            entry["sides"] = {s: v for s, v in prev["sides"].items() if s not in args.load_sides and same}
        log(f"== load {spec['name']}: {len(signals)} signals ({spec['what']}), method {spec['method']}")
        for side, srv in servers.items():
            if side not in args.load_sides:
                continue
            create_bank(srv, spec["name"], args.reset)
            if spec["method"] == "api":
                ids, secs, how = add_one_by_one(srv, spec["name"], signals, args.load_concurrency)
            elif side == "hma":
                if not args.hma_db:
                    raise SystemExit("--bulk needs --hma-db DSN (HMA's PostgreSQL database)")
                t = time.perf_counter()
                ids = hma_bulk_sql(args.hma_db, spec["name"], signals)
                secs = time.perf_counter() - t
                how = ("SQL into HMA's tables (bank_content + content_signal, ids from bank_content_id_seq) "
                       "via psql COPY; bank created through POST /c/banks; index needs `flask build_indices`")
            else:
                path, _ = pharos_bulk_path(srv)
                t = time.perf_counter()
                if path:
                    ids = pharos_bulk(srv, spec["name"], signals, args.bulk_chunk)
                    how = f"POST {path} (from the server's OpenAPI document), {args.bulk_chunk} signals per request"
                else:
                    ids, _, how = add_one_by_one(srv, spec["name"], signals, args.load_concurrency)
                    how += " (no bulk endpoint in the server's OpenAPI document)"
                secs = time.perf_counter() - t
            dup = len(ids) - len(set(ids))
            entry["sides"][side] = {"how": how, "seconds": round(secs, 3),
                                    "signals_per_s": round(len(signals) / secs, 1) if secs else None,
                                    "duplicate_ids": dup, "ids": ids}
            log(f"   {side}: {len(ids)} in {secs:.1f} s ({len(signals) / secs:.0f}/s) — {how}")
        state["banks"].append(entry)
    state["loaded_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    save_state(args, state)
    if "hma" in args.load_sides and any(b["method"] == "bulk" for b in state["banks"]) and not args.hma_build_cmd:
        log("== HMA: rows were written straight into its tables; rebuild its index now, e.g.\n"
            "   (cd hasher-matcher-actioner/src && OMM_CONFIG=/abs/omm_config.py flask --app OpenMediaMatch.app "
            "build_indices)\n   (or pass --hma-build-cmd CMD to have it run here)")


def save_state(args, state):
    os.makedirs(args.out, exist_ok=True)
    path = args.state
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)


def load_state(args):
    path = args.state
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run the load phase first")
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------------
# Readiness


def build_maps(state):
    """Per side: content id -> (bank, signal); per bank: signals."""
    maps = {}
    bank_signals = {}
    for b in state["banks"]:
        sig = b["signals"] if "signals" in b else random_hashes(b["n"], b["seed"])
        bank_signals[b["name"]] = sig
        for side, info in b["sides"].items():
            m = maps.setdefault(side, {})
            for i, cid in enumerate(info["ids"]):
                entry = (b["name"], sig[i])
                old = m.get(cid)
                if old is None:
                    m[cid] = entry
                elif isinstance(old, list):
                    old.append(entry)
                else:
                    m[cid] = [old, entry]  # the same id in two banks
    return maps, bank_signals


def id_overlap(state):
    """Per side: how many ids were given to more than one bank's content, with an example."""
    out = {}
    for side in {s for b in state["banks"] for s in b["sides"]}:
        seen = {}
        shared = set()
        example = None
        for b in state["banks"]:
            for i, cid in enumerate(b["sides"][side]["ids"]):
                if cid in seen and seen[cid][0] != b["name"]:
                    shared.add(cid)
                    if example is None or cid < example[0]:
                        example = (cid, seen[cid], (b["name"], i))
                else:
                    seen.setdefault(cid, (b["name"], i))
        ids = [cid for b in state["banks"] for cid in b["sides"][side]["ids"]]
        out[side] = {"ids": len(ids), "distinct": len(set(ids)), "shared_between_banks": len(shared),
                     "smallest": min(ids) if ids else None,
                     "example": (f"id {example[0]} is {example[1][0]}[{example[1][1]}] and {example[2][0]}[{example[2][1]}]"
                                 if example else None)}
    return out


def wait_ready(args, servers, state, bank_signals):
    """Until every side answers raw_lookup with the right id for probe signals of every bank."""
    probes = []
    for b in state["banks"]:
        sig = bank_signals[b["name"]]
        for i in sorted({0, len(sig) // 2, len(sig) - 1}):
            probes.append((b["name"], i, sig[i]))
    total = sum(b["n"] for b in state["banks"])
    ran_build = False
    t0 = time.time()
    pending = dict(servers)
    last_note = 0
    while pending:
        for side in list(pending):
            srv = pending[side]
            ok = True
            why = ""
            for name, i, s in probes:
                want = next(b["sides"][side]["ids"][i] for b in state["banks"] if b["name"] == name)
                r = srv.request("GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=s))
                if r.status != 200 or not isinstance(r.json, dict) or want not in r.json.get("matches", []):
                    ok = False
                    why = f"{name}[{i}] -> {r.short(200)}"
                    break
            if ok:
                log(f"== {side}: ready after {time.time() - t0:.0f} s")
                del pending[side]
                continue
            if side == "hma" and args.hma_build_cmd and not ran_build:
                st = srv.request("GET", "/m/index/status")
                size = (st.json or {}).get("pdq", {}).get("size", 0) if st.status == 200 else 0
                if size < total:
                    log(f"== hma: index holds {size} of {total} signals; running --hma-build-cmd")
                    t = time.perf_counter()
                    subprocess.run(args.hma_build_cmd, shell=True, check=True)
                    state.setdefault("hma_build", {})["seconds"] = round(time.perf_counter() - t, 1)
                    state["hma_build"]["command"] = args.hma_build_cmd
                ran_build = True
                continue
            if time.time() - last_note > 30:
                log(f"   waiting for {side}: {why}")
                last_note = time.time()
        if pending:
            if time.time() - t0 > args.wait:
                raise SystemExit(f"not ready after {args.wait} s: {', '.join(pending)}")
            time.sleep(2)


# --------------------------------------------------------------------------------------------------
# Requests


def build_requests(args, state, bank_signals, corpus_rows):
    """Each request: dict(group, label, method, path, body, headers, meta)."""
    rng = random.Random(args.seed + 7)
    names = [b["name"] for b in state["banks"]]
    corpus_bank = names[0]
    reqs = []

    def add(group, method, path, body=None, headers=None, **meta):
        reqs.append({"group": group, "method": method, "path": path, "body": body,
                     "headers": headers or {}, "meta": meta})

    # Query hashes: every corpus hash, --variants near variants of each (1..--max-flips bits), and a few
    # near variants of entries of the random banks.
    queries = []
    corpus_hashes = bank_signals[corpus_bank]
    for j, h in enumerate(corpus_hashes[: args.query_limit or None]):
        queries.append((h, "corpus", 0))
        for v in range(args.variants):
            k = 1 + (j * args.variants + v) % args.max_flips
            queries.append((flip_bits(h, k, rng), "corpus", k))
    for name in names[1:]:
        sig = bank_signals[name]
        for v in range(args.bank_variants):
            k = v % (args.max_flips + 1)
            queries.append((flip_bits(sig[rng.randrange(len(sig))], k, rng) if k else sig[rng.randrange(len(sig))],
                            name, k))
    for _ in range(args.bank_variants):
        queries.append((f"{rng.getrandbits(256):064x}", "unrelated", None))

    two = ",".join(names[:2])
    for h, src, k in queries:
        meta = {"query": h, "from": src, "flips": k}
        add("raw_lookup", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=h), **meta)
        add("raw_lookup include_distance", "GET",
            "/m/raw_lookup?" + q(signal_type="pdq", signal=h, include_distance="true"), **meta)
        add("raw_lookup banks=1", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=h, banks=corpus_bank), **meta)
        add("raw_lookup banks=2 include_distance", "GET",
            "/m/raw_lookup?" + q(signal_type="pdq", signal=h, banks=two, include_distance="true"), **meta)
        add("lookup", "GET", "/m/lookup?" + q(signal_type="pdq", signal=h), **meta)
        add("lookup banks=1", "GET", "/m/lookup?" + q(signal_type="pdq", signal=h, banks=corpus_bank), **meta)

    # Hashing: every corpus image.
    for r in corpus_rows:
        with open(r["abspath"], "rb") as f:
            data = f.read()
        body, ct = multipart([("photo", os.path.basename(r["path"]), data)])
        add("POST /h/hash", "POST", "/h/hash", body, {"Content-Type": ct}, image=r["path"])

    # Compare: corpus hashes against variants, on both sides of the threshold.
    for j, h in enumerate(corpus_hashes[: args.compare_pairs]):
        k = j % (args.max_flips + 1)
        other = flip_bits(h, k, rng)
        add("POST /m/compare", "POST", "/m/compare", json.dumps({"pdq": [h, other]}).encode(),
            {"Content-Type": "application/json"}, flips=k)

    # Curation reads, index status.
    add("GET /c/banks", "GET", "/c/banks")
    for name in names:
        add("GET /c/bank/NAME", "GET", f"/c/bank/{name}")
    for b in state["banks"]:
        ids = b["sides"]["hma"]["ids"] if "hma" in b["sides"] else None
        idx = sorted({0, b["n"] - 1} | {rng.randrange(b["n"]) for _ in range(3)})
        for i in idx:
            add("GET /c/bank/NAME/content/ID", "GET", f"/c/bank/{b['name']}/content/@{i}?include_signals=true",
                content=(b["name"], i))
    # Lookups of uploaded images (HMA: {signal type: {bank: [...]}}).
    for r in corpus_rows[: args.upload_lookups]:
        with open(r["abspath"], "rb") as f:
            body, ct = multipart([("photo", os.path.basename(r["path"]), f.read())])
        add("POST /m/lookup", "POST", "/m/lookup", body, {"Content-Type": ct}, image=r["path"])
        add("POST /m/lookup", "POST", "/m/lookup?" + q(banks=corpus_bank), body, {"Content-Type": ct}, image=r["path"])
    for path in ("/c/signal_type", "/c/content_type", "/c/signal_type/index", "/c/signal_type/index?signal_type=pdq",
                 "/status", "/status/live", "/status/ready", "/"):
        add("other GET", "GET", path, label=path)
    add("GET /m/index/status", "GET", "/m/index/status")
    add("GET /m/index/status", "GET", "/m/index/status?signal_type=pdq")
    if args.media_base:
        url_requests(args, corpus_rows, args.media_base, add)

    # Bad inputs (none of them changes state on a server that behaves like HMA).
    h = corpus_hashes[0]
    bad = [
        ("raw_lookup uppercase hash", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=h.upper())),
        ("raw_lookup short hash", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=h[:63])),
        ("raw_lookup hash with space", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=" " + h[1:])),
        ("raw_lookup non-hex hash", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal="g" * 64)),
        ("raw_lookup unknown signal_type", "GET", "/m/raw_lookup?" + q(signal_type="nope", signal=h)),
        ("raw_lookup missing signal", "GET", "/m/raw_lookup?" + q(signal_type="pdq")),
        ("raw_lookup missing signal_type", "GET", "/m/raw_lookup?" + q(signal=h)),
        ("raw_lookup no params", "GET", "/m/raw_lookup"),
        ("raw_lookup include_distance=maybe", "GET",
         "/m/raw_lookup?" + q(signal_type="pdq", signal=h, include_distance="maybe")),
        ("raw_lookup include_distance=1", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=h, include_distance="1")),
        ("raw_lookup include_distance=False", "GET",
         "/m/raw_lookup?" + q(signal_type="pdq", signal=h, include_distance="False")),
        ("raw_lookup unknown bank", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=h, banks="NO_SUCH_BANK")),
        ("raw_lookup bank with space", "GET",
         "/m/raw_lookup?" + q(signal_type="pdq", signal=h, banks=f"NO_SUCH_BANK, {corpus_bank}")),
        ("raw_lookup video_md5", "GET", "/m/raw_lookup?" + q(signal_type="video_md5", signal="d41d8cd98f00b204e9800998ecf8427e")),
        ("raw_lookup video_md5 bad", "GET", "/m/raw_lookup?" + q(signal_type="video_md5", signal="xyz")),
        ("lookup no params", "GET", "/m/lookup"),
        ("lookup signal only", "GET", "/m/lookup?" + q(signal=h)),
        ("lookup signal_type only", "GET", "/m/lookup?" + q(signal_type="pdq")),
        ("lookup bad hash", "GET", "/m/lookup?" + q(signal_type="pdq", signal="abc")),
        ("lookup unknown signal_type", "GET", "/m/lookup?" + q(signal_type="nope", signal=h)),
        ("lookup unknown bank", "GET", "/m/lookup?" + q(signal_type="pdq", signal=h, banks="NO_SUCH_BANK")),
        ("lookup with seed", "GET", "/m/lookup?" + q(signal_type="pdq", signal=h, seed="abc")),
        ("lookup bypass_coinflip=maybe", "GET", "/m/lookup?" + q(signal_type="pdq", signal=h, bypass_coinflip="maybe")),
        ("index/status unknown type", "GET", "/m/index/status?signal_type=nope"),
        ("GET /c/bank unknown", "GET", "/c/bank/NO_SUCH_BANK"),
        ("GET /c/bank lowercase", "GET", "/c/bank/lowercase"),
        ("GET content unknown id", "GET", f"/c/bank/{corpus_bank}/content/999999999"),
        ("GET content of unknown bank", "GET", "/c/bank/NO_SUCH_BANK/content/1"),
        ("GET content non-integer id", "GET", f"/c/bank/{corpus_bank}/content/abc"),
        ("unknown path", "GET", "/m/nope"),
        ("wrong method raw_lookup", "POST", "/m/raw_lookup?" + q(signal_type="pdq", signal=h)),
    ]
    for label, method, path in bad:
        add("bad input", method, path, label=label)
    jbad = [
        ("compare non-dict body", "/m/compare", b"[1, 2]"),
        ("compare empty object", "/m/compare", b"{}"),
        ("compare not a list", "/m/compare", json.dumps({"pdq": h}).encode()),
        ("compare one hash", "/m/compare", json.dumps({"pdq": [h]}).encode()),
        ("compare three hashes", "/m/compare", json.dumps({"pdq": [h, h, h]}).encode()),
        ("compare bad hash", "/m/compare", json.dumps({"pdq": [h, "abc"]}).encode()),
        ("compare uppercase hash", "/m/compare", json.dumps({"pdq": [h, h.upper()]}).encode()),
        ("compare unknown type", "/m/compare", json.dumps({"nope": [h, h]}).encode()),
        ("compare identical", "/m/compare", json.dumps({"pdq": [h, h]}).encode()),
        ("compare malformed JSON", "/m/compare", b"{"),
        ("create bank bad name", "/c/banks", json.dumps({"name": "lower_case"}).encode()),
        ("create bank dash", "/c/banks", json.dumps({"name": "A-B"}).encode()),
        ("create bank no name", "/c/banks", json.dumps({}).encode()),
        ("create bank existing", "/c/banks", json.dumps({"name": corpus_bank}).encode()),
        ("create bank not JSON", "/c/banks", b"not json"),
        ("add signal unknown bank", "/c/bank/NO_SUCH_BANK/signal", json.dumps({"pdq": h}).encode()),
        ("add signal bad hash", f"/c/bank/{corpus_bank}/signal", json.dumps({"pdq": "abc"}).encode()),
        ("add signal uppercase hash", f"/c/bank/{corpus_bank}/signal", json.dumps({"pdq": h.upper()}).encode()),
        ("add signal empty", f"/c/bank/{corpus_bank}/signal", json.dumps({}).encode()),
        ("add signal unknown type", f"/c/bank/{corpus_bank}/signal", json.dumps({"nope": h}).encode()),
        ("add signal long note", f"/c/bank/{corpus_bank}/signal", json.dumps({"pdq": "abc", "note": "x" * 300}).encode()),
    ]
    for label, path, body in jbad:
        add("bad input", "POST", path, body, {"Content-Type": "application/json"}, label=label)
    add("bad input", "POST", "/m/compare", json.dumps({"pdq": [h, h]}).encode(), {"Content-Type": "text/plain"},
        label="compare wrong Content-Type")
    img = corpus_rows[0]
    with open(img["abspath"], "rb") as f:
        data = f.read()
    for label, fields in [
        ("hash field named file", [("file", "x.jpg", data)]),
        ("hash two files", [("photo", "a.jpg", data), ("photo", "b.jpg", data)]),
        ("hash not an image", [("photo", "x.jpg", b"this is not an image")]),
        ("hash empty file", [("photo", "x.jpg", b"")]),
        ("hash form field, no file", [("photo", None, b"abc")]),
    ]:
        body, ct = multipart(fields)
        add("bad input", "POST", "/h/hash", body, {"Content-Type": ct}, label=label)
    body, ct = multipart([("photo", "x.jpg", data)])
    add("bad input", "POST", "/h/hash?types=nope", body, {"Content-Type": ct}, label="hash unknown types")
    add("bad input", "POST", "/h/hash?types=video_md5", body, {"Content-Type": ct}, label="hash types of the other content type")
    add("bad input", "POST", "/h/hash?types=,", body, {"Content-Type": ct}, label="hash empty types")
    add("bad input", "POST", "/h/hash", b"", {"Content-Type": "application/json"}, label="hash no upload")
    add("bad input", "GET", "/h/hash", label="GET hash without url")
    return reqs, len(queries)


# --------------------------------------------------------------------------------------------------
# A local media server for the URL forms (GET /h/hash?url=, GET /m/lookup?url=)


def start_media_server(corpus):
    """Serves the corpus on 127.0.0.1 (a free port): /img/<path> with the file's image type,
    /bin/<path> as application/octet-stream, /noctype/<path> without Content-Type, anything else 404."""
    import http.server
    import mimetypes

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            kind, _, rel = self.path.lstrip("/").partition("/")
            path = os.path.normpath(os.path.join(corpus, urllib.parse.unquote(rel)))
            if kind not in ("img", "bin", "noctype") or not path.startswith(os.path.abspath(corpus) + os.sep) \
                    or not os.path.isfile(path):
                self.send_response(404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"not found")
                return
            with open(path, "rb") as f:
                data = f.read()
            self.send_response(200)
            if kind == "img":
                self.send_header("Content-Type", mimetypes.guess_type(path)[0] or "image/jpeg")
            elif kind == "bin":
                self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def url_requests(args, corpus_rows, base, add):
    for r in corpus_rows[: args.url_images]:
        u = f"{base}/img/{urllib.parse.quote(r['path'])}"
        add("URL forms", "GET", "/h/hash?" + q(url=u), image=r["path"])
        add("URL forms", "GET", "/m/lookup?" + q(url=u), image=r["path"])
        add("URL forms", "GET", "/m/lookup?" + q(url=u, signal_type="pdq"), image=r["path"])
    r = corpus_rows[0]
    rel = urllib.parse.quote(r["path"])
    for label, path in [
        ("octet-stream without content_type", "/h/hash?" + q(url=f"{base}/bin/{rel}")),
        ("octet-stream with content_type=photo", "/h/hash?" + q(url=f"{base}/bin/{rel}", content_type="photo")),
        ("no Content-Type", "/h/hash?" + q(url=f"{base}/noctype/{rel}")),
        ("unknown content_type", "/h/hash?" + q(url=f"{base}/img/{rel}", content_type="nope")),
        ("content_type=video", "/h/hash?" + q(url=f"{base}/img/{rel}", content_type="video")),
        ("unknown types", "/h/hash?" + q(url=f"{base}/img/{rel}", types="nope")),
        ("upstream 404", "/h/hash?" + q(url=f"{base}/missing.jpg")),
        ("ftp URL", "/h/hash?" + q(url="ftp://127.0.0.1/x.jpg")),
        ("not a URL", "/h/hash?" + q(url="not a url")),
        ("bad port", "/h/hash?" + q(url="http://127.0.0.1:abc/x.jpg")),
        ("lookup upstream 404", "/m/lookup?" + q(url=f"{base}/missing.jpg")),
        ("lookup octet-stream", "/m/lookup?" + q(url=f"{base}/bin/{rel}")),
    ]:
        add("URL forms", "GET", path, label=label)


# --------------------------------------------------------------------------------------------------
# Normalising and comparing


class Normaliser:
    """Content ids -> "<content BANK:signal>" through each side's id map (the ids it gave back while
    loading). Where a side gave the same id to content of several banks (ids per bank, not global), the
    bank is taken from the answer (lookup groups by bank; content answers name their bank) or, in
    raw_lookup, from the one candidate within the match radius of the query (at the answered distance,
    within banks= if given); such resolutions are counted. An id never given back is looked up once with
    GET /c/bank/<bank>/content/<id>?include_signals=true ("<content BANK:signal>", else "<unknown id N>")."""

    def __init__(self, side, srv, idmap, bank_names):
        self.side = side
        self.srv = srv
        self.idmap = idmap
        self.banks = bank_names
        self.extra = {}
        self.ambiguous = collections.Counter()
        self.lock = threading.Lock()

    def candidates(self, cid):
        hit = self.idmap.get(cid)
        if hit is None:
            return []
        return hit if isinstance(hit, list) else [hit]

    def token(self, cid, bank=None, query=None, distance=None, banks=None):
        if isinstance(cid, bool) or not isinstance(cid, int):
            return cid
        cands = self.candidates(cid)
        if len(cands) > 1:
            pick = cands
            if bank is not None:
                pick = [c for c in pick if c[0] == bank]
            else:
                if banks:
                    pick = [c for c in pick if c[0] in banks]
                if query is not None and len(pick) > 1:
                    d = int(distance) if isinstance(distance, str) and distance.isdigit() else None
                    pick = [c for c in pick if (hamming(query, c[1]) == d if d is not None else hamming(query, c[1]) <= 31)]
            with self.lock:
                self.ambiguous["resolved" if len(pick) == 1 else "unresolved"] += 1
            if len(pick) == 1:
                return f"<content {pick[0][0]}:{pick[0][1]}>"
            return f"<ambiguous id {cid}: " + " | ".join(f"{c[0]}:{c[1][:12]}" for c in pick or cands) + ">"
        if len(cands) == 1:
            if bank is not None and cands[0][0] != bank:
                return f"<content {cands[0][0]}:{cands[0][1]} (answered as {bank})>"
            return f"<content {cands[0][0]}:{cands[0][1]}>"
        with self.lock:
            if cid in self.extra:
                return self.extra[cid]
        tok = f"<unknown id {cid}>"
        for b in ([bank] if bank else self.banks):
            r = self.srv.request("GET", f"/c/bank/{b}/content/{cid}?include_signals=true")
            if r.status == 200 and isinstance(r.json, dict):
                sig = (r.json.get("signals") or {}).get("pdq")
                owner = (r.json.get("bank") or {}).get("name", "?")
                tok = f"<content {owner}:{sig}>"
                break
        with self.lock:
            self.extra[cid] = tok
        return tok

    def norm(self, path, body):
        """The body with content ids replaced; the request path says where ids are."""
        if body is None:
            return None
        bare, _, qs = path.partition("?")
        params = dict(urllib.parse.parse_qsl(qs))
        query = params.get("signal")
        if not (isinstance(query, str) and re.fullmatch(r"[0-9a-f]{64}", query)):
            query = None
        banks = set(params["banks"].split(",")) if params.get("banks") else None
        if bare == "/m/raw_lookup" and isinstance(body, dict) and isinstance(body.get("matches"), list):
            out = []
            for m in body["matches"]:
                if isinstance(m, dict) and "bank_content_id" in m:
                    m = dict(m, bank_content_id=self.token(m["bank_content_id"], query=query,
                                                           distance=m.get("distance"), banks=banks))
                elif isinstance(m, int):
                    m = self.token(m, query=query, banks=banks)
                out.append(m)
            return dict(body, matches=out)
        if bare == "/m/lookup" and isinstance(body, dict):
            def by_bank(d):
                return {bank: ([dict(m, bank_content_id=self.token(m["bank_content_id"], bank=bank))
                                if isinstance(m, dict) and "bank_content_id" in m else m for m in lst]
                               if isinstance(lst, list) else by_bank(lst) if isinstance(lst, dict) else lst)
                        for bank, lst in d.items()}
            return by_bank(body)  # {bank: [...]}, or {signal type: {bank: [...]}} for uploads
        if re.fullmatch(r"/c/bank/[^/]+/content/[^/]+", bare) and isinstance(body, dict) and "id" in body:
            owner = (body.get("bank") or {}).get("name") if isinstance(body.get("bank"), dict) else None
            return dict(body, id=self.token(body["id"], bank=owner))
        if bare == "/c/signal_type/index" and isinstance(body, dict):
            return {t: ({k: ("<unix time>" if k in ("index_built_to", "newest_db_item") and isinstance(v, int) and v > 0
                             else v) for k, v in st.items()} if isinstance(st, dict) else st)
                    for t, st in body.items()}
        if bare == "/m/index/status" and isinstance(body, dict):
            out = {}
            for t, st in body.items():
                if isinstance(st, dict) and isinstance(st.get("built_to"), int) and st["built_to"] > 0:
                    st = dict(st, built_to="<unix time>")
                out[t] = st
            return out
        if isinstance(body, list) and body and all(isinstance(e, dict) and "url" in e and "type" in e for e in body):
            # pydantic's 422 detail carries its minor version in the URL
            return [dict(e, url=re.sub(r"/2\.\d+/", "/2.x/", e["url"])) for e in body]
        return body


def canon(x):
    if isinstance(x, dict):
        return {k: canon(v) for k, v in x.items()}
    if isinstance(x, list):
        return sorted((canon(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    return x


def dumps(x):
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def media_type(ct):
    return ct.split(";")[0].strip().lower()


def match_tokens(group, body):
    """The set of matched content tokens of a (normalised) lookup body, or None."""
    if not isinstance(body, dict):
        return None
    if group.startswith("raw_lookup") and isinstance(body.get("matches"), list):
        return {(m["bank_content_id"], m.get("distance")) if isinstance(m, dict) else (m, None)
                for m in body["matches"]}
    if group.startswith("lookup"):
        out = set()
        for bank, lst in body.items():
            if isinstance(lst, list):
                for m in lst:
                    if isinstance(m, dict):
                        out.add((m.get("bank_content_id"), m.get("distance")))
        return out
    return None


def classify(req, a, b, na, nb, corpus_by_path):
    """Returns (category, detail) for a difference between HMA's answer a and Pharos's b; None if equal.
    Categories starting with "known:" are the expected, legitimate differences."""
    g = req["group"]
    row = corpus_by_path.get(req["meta"].get("image")) if g in ("POST /m/lookup", "URL forms") else None
    if row is not None and (a.status, dumps(na)) != (b.status, dumps(nb)):
        q_ = int(row["pdq_quality_cpp"])
        if row["mode"] not in ("RGB", "L"):
            return (f"known: {g}: HMA hashes a {row['mode']} image without converting it to RGB",
                    f"quality {q_}")
        if row["pdq_hex"] != row["pdq_hex_cpp"] and a.status == b.status == 200:
            return (f"known: {g}: HMA's pdqhash computes luma in float64 (reference C++ in float32)",
                    f"{hamming(row['pdq_hex'], row['pdq_hex_cpp'])} bits")
        if q_ < 50 and a.status != b.status:
            return (f"{g}: image with PDQ quality < 50: status {a.status} vs {b.status}", f"quality {q_}")
    if a.status != b.status:
        return f"{g}: status {a.status} vs {b.status}", ""
    ja, jb = na, nb
    if a.json is None and b.json is None:
        if a.body.strip() != b.body.strip() and a.status < 400:
            return f"{g}: non-JSON body differs", ""
        if media_type(a.ctype) != media_type(b.ctype):
            return f"{g}: Content-Type {media_type(a.ctype)} vs {media_type(b.ctype)}", ""
        return None
    if (a.json is None) != (b.json is None):
        return f"{g}: JSON on one side only ({media_type(a.ctype) or '-'} vs {media_type(b.ctype) or '-'})", ""
    if dumps(ja) == dumps(jb):
        if media_type(a.ctype) != media_type(b.ctype):
            return f"{g}: Content-Type {media_type(a.ctype)} vs {media_type(b.ctype)}", ""
        return None
    if dumps(canon(ja)) == dumps(canon(jb)):
        return f"known: {g}: order of list items only", ""
    if g == "POST /h/hash":
        return classify_hash(req, ja, jb, corpus_by_path)
    ta, tb = match_tokens(g, ja), match_tokens(g, jb)
    if ta is not None and tb is not None:
        ia = {t[0] for t in ta}
        ib = {t[0] for t in tb}
        if ia == ib:
            return f"{g}: same matches, different distances", ""
        miss, extra = ia - ib, ib - ia
        kind = []
        if miss:
            kind.append("Pharos misses matches")
        if extra:
            kind.append("Pharos has extra matches")
        return f"{g}: {' and '.join(kind)}", f"missing {sorted(miss)[:3]} extra {sorted(extra)[:3]}"
    if isinstance(ja, list) and isinstance(jb, list) and req["meta"].get("label") == "/c/signal_type":
        if all(x in jb for x in ja):
            return "known: GET /c/signal_type: Pharos lists extra signal types", \
                f"extra {[x.get('name') for x in jb if x not in ja]}"
    if req["meta"].get("label", "").startswith("/c/signal_type/index") and isinstance(ja, dict) and isinstance(jb, dict):
        if all(dumps(ja[k]) == dumps(jb.get(k)) for k in ja):
            return "known: GET /c/signal_type/index: Pharos lists extra signal types", f"extra keys {sorted(set(jb) - set(ja))}"
        differ = [k for k in ja if dumps(ja[k]) != dumps(jb.get(k))]
        return (f"GET /c/signal_type/index: {', '.join(differ)} differs",
                "; ".join(f"{k}: HMA {dumps(ja[k])}, Pharos {dumps(jb.get(k))}" for k in differ))
    if g == "GET /m/index/status" and isinstance(ja, dict) and isinstance(jb, dict):
        common = sorted(set(ja) & set(jb))
        differ = [k for k in common if dumps(ja[k]) != dumps(jb[k])]
        if differ:
            return (f"{g}: {', '.join(differ)} differs",
                    "; ".join(f"{k}: HMA {dumps(ja[k])}, Pharos {dumps(jb[k])}" for k in differ))
        if set(ja) <= set(jb):
            return "known: GET /m/index/status: Pharos lists extra signal types", f"extra keys {sorted(set(jb) - set(ja))}"
    if isinstance(ja, dict) and isinstance(jb, dict) and set(ja) != set(jb):
        return f"{g}: different keys", f"HMA only {sorted(set(ja) - set(jb))}, Pharos only {sorted(set(jb) - set(ja))}"
    if isinstance(ja, dict) and isinstance(jb, dict) and set(ja) == {"message"}:
        return f"{g}: message text differs", ""
    return f"{g}: body differs", ""


def classify_hash(req, ja, jb, corpus_by_path):
    row = corpus_by_path.get(req["meta"].get("image"))
    pa = ja.get("pdq") if isinstance(ja, dict) else None
    pb = jb.get("pdq") if isinstance(jb, dict) else None
    if row is None or not isinstance(pa, str) or not isinstance(pb, str):
        return "POST /h/hash: body differs", ""
    ref_cpp, ref_py = row["pdq_hex_cpp"], row["pdq_hex"]
    qual = int(row["pdq_quality_cpp"])
    mode = row["mode"]
    d = f"mode {mode}, quality {qual}"
    if pa == "" and qual < 50:
        return "POST /h/hash: Pharos does not answer \"\" for quality < 50 (HMA does)", f"{d}; Pharos {pb}"
    if pb == ref_cpp and pa != ref_py and mode not in ("RGB", "L"):
        # HMA hands Pillow's array to pdqhash without convert("RGB"): CMYK channels read as RGB, palette
        # indices of P images as grey levels, mode 1 as 0/1 (quality < 50, so "").
        return (f"known: POST /h/hash: HMA hashes a {mode} image without converting it to RGB",
                f"{d}; HMA " + (f"{hamming(pa, ref_cpp)} bits from the reference" if pa else '""'))
    if pb == "" and qual >= 50:
        return "POST /h/hash: Pharos answers \"\" for quality >= 50", d
    if pa and pb and pb == ref_cpp and pa == ref_py:
        return ("known: POST /h/hash: HMA's pdqhash computes luma in float64 (reference C++ in float32)",
                f"{d}; {hamming(pa, pb)} bits")
    if pa and pb:
        return ("POST /h/hash: Pharos's PDQ differs from HMA's and from the reference" if pb != ref_cpp
                else "POST /h/hash: HMA differs from the reference, Pharos equals it",
                f"{d}; Pharos {hamming(pb, ref_cpp)} bits from reference, HMA {hamming(pa, ref_cpp)}")
    return "POST /h/hash: body differs", d


def run_compare(args, servers, state, reqs, maps, bank_signals, corpus_rows):
    names = [b["name"] for b in state["banks"]]
    norms = {side: Normaliser(side, srv, maps.get(side, {}), names) for side, srv in servers.items()}
    corpus_by_path = {r["path"]: r for r in corpus_rows}
    # Requests for a given content item name it as "@<index>": each side's own id for that item.
    id_of = {side: {b["name"]: b["sides"][side]["ids"] for b in state["banks"]} for side in servers}

    def path_for(side, req):
        c = req["meta"].get("content")
        if c is None:
            return req["path"]
        bank, i = c
        return req["path"].replace(f"/content/@{i}", f"/content/{id_of[side][bank][i]}")

    results = [None] * len(reqs)

    def one(i):
        req = reqs[i]
        out = {}
        for side, srv in servers.items():
            out[side] = srv.request(req["method"], path_for(side, req), req["body"], req["headers"])
        results[i] = out

    t = time.perf_counter()
    done = 0
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as ex:
        for _ in ex.map(one, range(len(reqs))):
            done += 1
            if done % 1000 == 0:
                log(f"   {done}/{len(reqs)} requests ({time.perf_counter() - t:.0f} s)")
    log(f"== replayed {len(reqs)} requests to each side in {time.perf_counter() - t:.0f} s")

    diffs = []
    per_group = collections.Counter()
    for req, res in zip(reqs, results):
        per_group[req["group"]] += 1
        a, b = res["hma"], res["pharos"]
        na = norms["hma"].norm(req["path"], a.json)
        nb = norms["pharos"].norm(req["path"], b.json)
        c = classify(req, a, b, na, nb, corpus_by_path)
        if c is None:
            continue
        cat, detail = c
        if req["meta"].get("label"):
            cat = f"{cat} [{req['meta']['label']}]" if not cat.startswith("known") else cat
        diffs.append({
            "category": cat, "detail": detail, "request": f"{req['method']} {req['path']}",
            "meta": {k: v for k, v in req["meta"].items()},
            "hma": {"status": a.status, "content_type": a.ctype,
                    "body": na if a.json is not None else a.body.decode("utf-8", "replace")[:2000]},
            "pharos": {"status": b.status, "content_type": b.ctype,
                       "body": nb if b.json is not None else b.body.decode("utf-8", "replace")[:2000]},
            "hma_raw": a.short(400), "pharos_raw": b.short(400),
        })
    # Each side's /h/hash answers against the corpus's reference hashes.
    vs_ref = {side: collections.Counter() for side in servers}
    vs_ref_rows = {side: [] for side in servers}
    for req, res in zip(reqs, results):
        if req["group"] != "POST /h/hash":
            continue
        row = corpus_by_path[req["meta"]["image"]]
        for side in servers:
            r = res[side]
            got = r.json.get("pdq") if r.status == 200 and isinstance(r.json, dict) else None
            low = int(row["pdq_quality_cpp"]) < 50
            if got is None:
                k = f"status {r.status}"
            elif got == "":
                k = '"" (quality < 50)' if low else '"" (quality >= 50)'
                if not low:
                    vs_ref_rows[side].append(f"{row['path']} (mode {row['mode']}, quality {row['pdq_quality_cpp']}): "
                                             '""')
            elif got == row["pdq_hex_cpp"]:
                k = "= pdq_hex_cpp" + (" (quality < 50)" if low else "")
            elif got == row["pdq_hex"]:
                k = "= pdq_hex (pdqhash, float64 luma)"
            else:
                k = "other"
                vs_ref_rows[side].append(f"{row['path']} (mode {row['mode']}, quality {row['pdq_quality_cpp']}): "
                                         f"{hamming(got, row['pdq_hex_cpp'])} bits from pdq_hex_cpp")
            vs_ref[side][k] += 1
    overlap = id_overlap(state)
    if overlap.get("pharos", {}).get("shared_between_banks") and not overlap.get("hma", {}).get("shared_between_banks"):
        o = overlap["pharos"]
        diffs.insert(0, {
            "category": "content ids: Pharos gives the same id to content of different banks (HMA's ids are global)",
            "detail": f"{o['shared_between_banks']} of {o['distinct']} distinct ids are shared; e.g. {o['example']}; "
                      f"smallest id {o['smallest']} (HMA {overlap['hma']['smallest']})",
            "request": "POST /c/bank/NAME/signal (and /signals) answers, while loading", "meta": {},
            "hma": {"status": 200, "content_type": "", "body": "ids unique across banks"},
            "pharos": {"status": 200, "content_type": "", "body": "ids restart in every bank"},
            "hma_raw": "", "pharos_raw": ""})
    status_hist = {side: collections.Counter(f"{reqs[i]['group']} {res[side].status}" for i, res in enumerate(results))
                   for side in servers}
    lat = {side: sorted(res[side].seconds for res in results) for side in servers}
    return {
        "requests": len(reqs), "per_group": dict(per_group), "differences": diffs,
        "status_histogram": {s: dict(sorted(h.items())) for s, h in status_hist.items()},
        "median_latency_ms": {s: round(1000 * v[len(v) // 2], 2) for s, v in lat.items()},
        "unknown_ids": {s: n.extra for s, n in norms.items() if n.extra},
        "ambiguous_ids": {s: dict(n.ambiguous) for s, n in norms.items()},
        "id_overlap": overlap,
        "hash_vs_reference": {s: dict(c) for s, c in vs_ref.items()},
        "hash_other": vs_ref_rows,
    }


# --------------------------------------------------------------------------------------------------
# Curation scenario: the same writes, one after the other, on both sides


def scenario_steps(args, corpus_rows, rnd, rh):
    p = args.bank_prefix
    s1, s2, corpus = f"{p}TMP", f"{p}TMP2", f"{p}CORPUS"
    later = int(time.time()) + 3600
    rng = random.Random(args.seed + 55)
    h1, h2 = (f"{rng.getrandbits(256):064x}" for _ in range(2))
    good = next(r for r in corpus_rows if int(r["pdq_quality_cpp"]) >= 80 and r["mode"] == "RGB")
    low = next(r for r in corpus_rows if int(r["pdq_quality_cpp"]) < 50)
    with open(good["abspath"], "rb") as f:
        good_bytes = f.read()
    with open(low["abspath"], "rb") as f:
        low_bytes = f.read()
    meta = json.dumps({"content_id": "abc-1", "content_uri": "https://example.com/x.jpg", "json": {"k": [1, 2]}})
    J = "json"
    steps = [
        ("create bank with enabled_ratio", "POST", "/c/banks", J, {"name": s1, "enabled_ratio": 0.5}, None),
        ("create it again", "POST", "/c/banks", J, {"name": s1}, None),
        ("get it", "GET", f"/c/bank/{s1}", None, None, None),
        ("disable", "PUT", f"/c/bank/{s1}", J, {"enabled": False}, None),
        ("set ratio", "PUT", f"/c/bank/{s1}", J, {"enabled_ratio": 0.25}, None),
        ("enable and set ratio", "PUT", f"/c/bank/{s1}", J, {"enabled": True, "enabled_ratio": 0.75}, None),
        ("rename to a bad name", "PUT", f"/c/bank/{s1}", J, {"name": "lower"}, None),
        ("rename to a taken name", "PUT", f"/c/bank/{s1}", J, {"name": corpus}, None),
        ("rename", "PUT", f"/c/bank/{s1}", J, {"name": s2}, None),
        ("get the old name", "GET", f"/c/bank/{s1}", None, None, None),
        ("get the new name", "GET", f"/c/bank/{s2}", None, None, None),
        ("rename back", "PUT", f"/c/bank/{s2}", J, {"name": s1}, None),
        ("get the name after renaming back", "GET", f"/c/bank/{s1}", None, None, None),
        ("update an unknown bank", "PUT", "/c/bank/NO_SUCH_BANK", J, {"enabled_ratio": 1.0}, None),
        ("update with a non-JSON body", "PUT", f"/c/bank/{s1}", "raw", b"xyz", None),
        ("add a signal with a note", "POST", f"/c/bank/{s1}/signal", J, {"pdq": h1, "note": "hello"}, "id1"),
        ("add another signal", "POST", f"/c/bank/{s1}/signal", J, {"pdq": h2}, "id2"),
        ("add a signal with a too long note", "POST", f"/c/bank/{s1}/signal", J, {"pdq": h2, "note": "n" * 256}, None),
        ("add a signal with a non-string note", "POST", f"/c/bank/{s1}/signal", J, {"pdq": h2, "note": 5}, None),
        ("get content (defaults)", "GET", f"/c/bank/{s1}/content/{{id1}}", None, None, None),
        ("get content with signals, without metadata", "GET",
         f"/c/bank/{s1}/content/{{id1}}?include_signals=true&include_metadata=false", None, None, None),
        ("get content through another bank's name", "GET", f"/c/bank/{corpus}/content/{{id1}}?include_signals=true",
         None, None, None),
        ("disable content forever", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"disable_until_ts": 0}, None),
        ("disable_until_ts not a number", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"disable_until_ts": "abc"}, None),
        ("disable_until_ts negative", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"disable_until_ts": -5}, None),
        ("disable_until_ts too far", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"disable_until_ts": 99999999999}, None),
        ("disable_until_ts as a numeric string", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"disable_until_ts": "1"}, None),
        ("clear the note", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"note": ""}, None),
        ("too long note", "PUT", f"/c/bank/{s1}/content/{{id1}}", J, {"note": "x" * 256}, None),
        ("update unknown content", "PUT", f"/c/bank/{s1}/content/999999999", J, {"note": "x"}, None),
        ("get content after updates", "GET", f"/c/bank/{s1}/content/{{id1}}?include_signals=true", None, None, None),
        ("upload with metadata and note", "POST", f"/c/bank/{s1}/content", "multipart",
         [("photo", "a.jpg", good_bytes), ("metadata", None, meta.encode()), ("note", None, b"uploaded")], "id3"),
        ("get uploaded content", "GET", f"/c/bank/{s1}/content/{{id3}}?include_signals=true", None, None, None),
        ("upload with an unknown metadata key", "POST", f"/c/bank/{s1}/content", "multipart",
         [("photo", "a.jpg", good_bytes), ("metadata", None, b'{"bad": 1}')], None),
        ("upload with metadata that is not JSON", "POST", f"/c/bank/{s1}/content", "multipart",
         [("photo", "a.jpg", good_bytes), ("metadata", None, b"{nope")], None),
        ("upload a low-quality image", "POST", f"/c/bank/{s1}/content", "multipart",
         [("photo", "low.jpg", low_bytes)], None),
        ("add content without upload or url", "POST", f"/c/bank/{s1}/content", None, None, None),
        ("add content to an unknown bank", "POST", "/c/bank/NO_SUCH_BANK/content", "multipart",
         [("photo", "a.jpg", good_bytes)], None),
        ("delete content", "DELETE", f"/c/bank/{s1}/content/{{id2}}", None, None, None),
        ("delete it again", "DELETE", f"/c/bank/{s1}/content/{{id2}}", None, None, None),
        ("get deleted content", "GET", f"/c/bank/{s1}/content/{{id2}}", None, None, None),
        ("update deleted content", "PUT", f"/c/bank/{s1}/content/{{id2}}", J, {"note": "x"}, None),
        ("delete content of an unknown bank", "DELETE", "/c/bank/NO_SUCH_BANK/content/1", None, None, None),
        # Enablement, on an entry of the random bank (put back as it was): lookup drops disabled content
        # and banks whose ratio loses the coin flip; raw_lookup checks neither.
        ("lookup an entry", "GET", "/m/lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("disable the entry", "PUT", f"/c/bank/{rnd}/content/{{r}}", J, {"disable_until_ts": 0}, None),
        ("lookup the disabled entry", "GET", "/m/lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("raw_lookup the disabled entry", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=rh, banks=rnd),
         None, None, None),
        ("disable it for an hour", "PUT", f"/c/bank/{rnd}/content/{{r}}", J, {"disable_until_ts": later}, None),
        ("lookup it", "GET", "/m/lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("enable it again", "PUT", f"/c/bank/{rnd}/content/{{r}}", J, {"disable_until_ts": 1}, None),
        ("lookup the enabled entry", "GET", "/m/lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("bank ratio 0", "PUT", f"/c/bank/{rnd}", J, {"enabled_ratio": 0.0}, None),
        ("lookup in a bank with ratio 0", "GET", "/m/lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("raw_lookup in a bank with ratio 0", "GET", "/m/raw_lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("bank ratio 1 again", "PUT", f"/c/bank/{rnd}", J, {"enabled_ratio": 1.0}, None),
        ("lookup after ratio 1", "GET", "/m/lookup?" + q(signal_type="pdq", signal=rh), None, None, None),
        ("list banks", "GET", "/c/banks", None, None, None),
        ("delete the bank", "DELETE", f"/c/bank/{s1}", None, None, None),
        ("delete it again", "DELETE", f"/c/bank/{s1}", None, None, None),
        ("get the deleted bank", "GET", f"/c/bank/{s1}", None, None, None),
        ("delete the renamed bank's name", "DELETE", f"/c/bank/{s2}", None, None, None),
    ]
    return steps, (s1, s2)


def scenario_norm(x, names):
    """Ids this scenario created -> "<idN>" (in id fields, and quoted in message texts)."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if k in ("id", "bank_content_id") and isinstance(v, int) and v in names:
                out[k] = f"<{names[v]}>"
            elif k == "matches" and isinstance(v, list):
                out[k] = [f"<{names[m]}>" if isinstance(m, int) and m in names else scenario_norm(m, names) for m in v]
            else:
                out[k] = scenario_norm(v, names)
        return out
    if isinstance(x, list):
        return [scenario_norm(v, names) for v in x]
    if isinstance(x, str) and names:
        for v, n in names.items():
            x = x.replace(f"'{v}'", f"'<{n}>'")
        return x
    return x


def run_scenario(args, servers, corpus_rows, state, bank_signals):
    rb = next((b for b in state["banks"] if b["name"].endswith("RANDOM")), state["banks"][0])
    k = min(5, rb["n"] - 1)
    steps, banks = scenario_steps(args, corpus_rows, rb["name"], bank_signals[rb["name"]][k])
    for srv in servers.values():
        for b in banks:
            srv.request("DELETE", f"/c/bank/{b}")
    ids = {side: {"r": rb["sides"][side]["ids"][k]} for side in servers}
    diffs = []
    for label, method, path, kind, body, save in steps:
        res = {}
        for side, srv in servers.items():
            pth = path.format_map(collections.defaultdict(lambda: "999999998", ids[side])) if "{" in path else path
            headers = {}
            data = None
            if kind == "json":
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            elif kind == "raw":
                data = body
                headers["Content-Type"] = "text/plain"
            elif kind == "multipart":
                data, headers["Content-Type"] = multipart(body)
            r = srv.request(method, pth, data, headers)
            if save and r.status == 200 and isinstance(r.json, dict) and isinstance(r.json.get("id"), int):
                ids[side][save] = r.json["id"]
            res[side] = r
        a, b = res["hma"], res["pharos"]
        na = scenario_norm(a.json, {v: k for k, v in ids["hma"].items()})
        nb = scenario_norm(b.json, {v: k for k, v in ids["pharos"].items()})
        req = {"group": "curation scenario", "meta": {"label": label}}
        c = classify(req, a, b, na, nb, {})
        if c is None:
            continue
        cat, detail = c
        if not cat.startswith("known:"):
            cat = f"{cat} [{label}]"
        diffs.append({"category": cat, "detail": detail, "request": f"{method} {path}", "meta": {"label": label},
                      "hma": {"status": a.status, "content_type": a.ctype,
                              "body": na if a.json is not None else a.body.decode("utf-8", "replace")[:2000]},
                      "pharos": {"status": b.status, "content_type": b.ctype,
                                 "body": nb if b.json is not None else b.body.decode("utf-8", "replace")[:2000]},
                      "hma_raw": a.short(400), "pharos_raw": b.short(400)})
    return len(steps), diffs


# --------------------------------------------------------------------------------------------------
# Throughput


def wrk_run(url, listfile, clients, duration, token, threads):
    env = dict(os.environ, HMA_WRK_LIST=listfile, HMA_WRK_TOKEN=token or "")
    cmd = ["wrk", "-t", str(min(threads, clients)), "-c", str(clients), "-d", f"{duration}s", "--timeout", "60s",
           "-s", os.path.join(HERE, "hma_wrk.lua"), url]
    load0 = os.getloadavg()[0]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    m = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["command"] = " ".join(cmd)
    r["loadavg_before"] = round(load0, 2)
    r["loadavg_after"] = round(os.getloadavg()[0], 2)
    return r


def phase_bench(args, servers, state, corpus_rows, workdir):
    big = next((b for b in state["banks"] if b["name"].endswith("BIG")), None)
    target = big or max(state["banks"], key=lambda b: b["n"])
    rng = random.Random(args.seed + 99)
    lists = {}
    p = os.path.join(workdir, "raw_lookup.list")
    with open(p, "w") as f:
        for _ in range(args.bench_queries):
            f.write(f"GET\t/m/raw_lookup?{q(signal_type='pdq', signal=f'{rng.getrandbits(256):064x}')}\n")
    lists["GET /m/raw_lookup"] = p
    p = os.path.join(workdir, "hash.list")
    with open(p, "w") as f:
        for i, r in enumerate(corpus_rows):
            with open(r["abspath"], "rb") as g:
                body, ct = multipart([("photo", os.path.basename(r["path"]), g.read())])
            bp = os.path.join(workdir, f"body{i}.bin")
            with open(bp, "wb") as g:
                g.write(body)
            f.write(f"POST\t/h/hash\t{bp}\t{ct}\n")
    lists["POST /h/hash"] = p

    rows = []
    for what, listfile in lists.items():
        for clients in args.clients:
            row = {"what": what, "clients": clients}
            for side, srv in servers.items():
                # A short warm-up, then the timed run.
                wrk_run(srv.url + "/", listfile, clients, 2, srv.token, args.wrk_threads)
                r = wrk_run(srv.url + "/", listfile, clients, args.duration, srv.token, args.wrk_threads)
                row[side] = r
                log(f"   {what} x{clients} {side}: {r['rps']:.1f} req/s, p50 {r['latency_us']['p50'] / 1000:.1f} ms, "
                    f"errors {r['errors']} (load {r['loadavg_before']} -> {r['loadavg_after']})")
            if "hma" in row and "pharos" in row and row["hma"]["rps"]:
                row["ratio"] = row["pharos"]["rps"] / row["hma"]["rps"]
            rows.append(row)
    return {"bank": target["name"], "bank_size": target["n"], "duration_s": args.duration, "rows": rows,
            "raw_lookup_queries": args.bench_queries, "images": len(corpus_rows)}


# --------------------------------------------------------------------------------------------------
# Report


def fmt_body(side):
    b = side["body"]
    text = dumps(b) if not isinstance(b, str) else b
    if len(text) > 500:
        text = text[:500] + f"... ({len(text)} chars)"
    return f"{side['status']} {text}"


def report(args, state, comp, bench, info):
    lines = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"## Pharos vs HMA (OpenMediaMatch): HTTP API side by side ({now})\n")
    lines.append(f"* Command: `{info['command']}`")
    lines.append(f"* HMA: {info['hma_url']} ({args.hma_label}); Pharos: {info['pharos_url']} ({info.get('pharos_version', '?')})")
    lines.append(f"* Machine: {info['cpu']}, {os.cpu_count()} CPUs; load average at start {info['loadavg']}")
    if state:
        lines.append("\n### Loaded banks\n")
        lines.append("| bank | signals | content | side | how | s | signals/s |")
        lines.append("|---|---|---|---|---|---|---|")
        for b in state["banks"]:
            for side, s in b["sides"].items():
                lines.append(f"| {b['name']} | {b['n']} | {b['what']} | {side} | {s['how']} | {s['seconds']} | "
                             f"{s['signals_per_s']} |")
        if state.get("hma_build"):
            lines.append(f"\nHMA index rebuilt with `{state['hma_build']['command']}` "
                         f"({state['hma_build']['seconds']} s).")
    if comp:
        diffs = comp["differences"]
        lines.append("\n### Responses compared\n")
        lines.append(f"{comp['requests']} requests replayed to both servers; {len(diffs)} differ. Normalised before "
                     "comparing: content ids (each side's id → `<content BANK:signal>` through the ids each side "
                     "returned when the signal was added), `built_to` timestamps of `/m/index/status` "
                     "(→ `<unix time>`), pydantic's version in 422 detail URLs; then compared: status code, "
                     "Content-Type, JSON body (lists compared in order, and again sorted, to single out "
                     "order-only differences).\n")
        lines.append("| request group | requests |")
        lines.append("|---|---|")
        for g, n in sorted(comp["per_group"].items()):
            lines.append(f"| {g} | {n} |")
        cats = collections.defaultdict(list)
        for d in diffs:
            cats[d["category"]].append(d)
        unexpected = sorted(c for c in cats if not c.startswith("known:"))
        known = sorted(c for c in cats if c.startswith("known:"))
        lines.append(f"\n#### Differences ({len(unexpected)} groups; every one listed in hma-diffs.txt)\n")
        if not unexpected:
            lines.append("None.")
        for c in unexpected:
            lines.append(f"* **{c}**: {len(cats[c])}")
            for d in cats[c][: args.examples]:
                lines.append(f"  * `{d['request'][:200]}` {d['detail']}")
                lines.append(f"    * HMA: `{fmt_body(d['hma'])}`")
                lines.append(f"    * Pharos: `{fmt_body(d['pharos'])}`")
        lines.append("\n#### Known, legitimate differences\n")
        if not known:
            lines.append("None.")
        for c in known:
            lines.append(f"* {c[len('known: '):]}: {len(cats[c])}")
            for d in cats[c][: args.examples]:
                lines.append(f"  * `{d['request'][:200]}` {d['detail']}")
        lines.append("\n#### Content ids\n")
        for side, o in comp["id_overlap"].items():
            lines.append(f"* {side}: {o['ids']} ids given while loading, {o['distinct']} distinct, "
                         f"{o['shared_between_banks']} shared between banks, smallest {o['smallest']}"
                         + (f" ({o['example']})" if o["example"] else ""))
        for side, a in comp["ambiguous_ids"].items():
            if a:
                lines.append(f"* {side}: ids in answers that named content of several banks: {a.get('resolved', 0)} "
                             f"resolved by bank, radius and distance, {a.get('unresolved', 0)} not")
        lines.append("\n#### `POST /h/hash` answers against the corpus's reference PDQ (`expected.tsv`)\n")
        keys = sorted({k for c in comp["hash_vs_reference"].values() for k in c})
        lines.append("| answer | " + " | ".join(comp["hash_vs_reference"]) + " |")
        lines.append("|---|" + "---|" * len(comp["hash_vs_reference"]))
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(str(c.get(k, 0)) for c in comp["hash_vs_reference"].values()) + " |")
        for side, rows in comp["hash_other"].items():
            for r in rows:
                lines.append(f"* {side}: {r}")
        lines.append(f"\nMedian latency of the replayed requests: " +
                     ", ".join(f"{s} {v} ms" for s, v in comp["median_latency_ms"].items()))
    if bench:
        lines.append(f"\n### Throughput (wrk, {bench['duration_s']} s per run after a 2 s warm-up)\n")
        lines.append(f"`GET /m/raw_lookup`: {bench['raw_lookup_queries']} random PDQ hashes against all banks "
                     f"(largest {bench['bank']}, {bench['bank_size']} signals); `POST /h/hash`: the "
                     f"{bench['images']} corpus images as multipart `photo`, in rotation.\n")
        lines.append("| request | clients | HMA req/s | HMA p50 ms | Pharos req/s | Pharos p50 ms | Pharos / HMA | errors (HMA / Pharos) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in bench["rows"]:
            h, p = r.get("hma"), r.get("pharos")
            def cell(x):
                return (f"{x['rps']:.1f}", f"{x['latency_us']['p50'] / 1000:.1f}") if x else ("-", "-")
            def errs(x):
                return sum(x["errors"].values()) if x else "-"
            lines.append(f"| {r['what']} | {r['clients']} | {cell(h)[0]} | {cell(h)[1]} | {cell(p)[0]} | {cell(p)[1]} | "
                         f"{r['ratio']:.1f}× | {errs(h)} / {errs(p)} |" if "ratio" in r else
                         f"| {r['what']} | {r['clients']} | {cell(h)[0]} | {cell(h)[1]} | {cell(p)[0]} | {cell(p)[1]} | - | "
                         f"{errs(h)} / {errs(p)} |")
    return "\n".join(lines) + "\n"


def write_diffs(path, comp):
    with open(path, "w") as f:
        for d in sorted(comp["differences"], key=lambda d: d["category"]):
            f.write(f"[{d['category']}] {d['request']}\n")
            if d["detail"]:
                f.write(f"  detail: {d['detail']}\n")
            if d["meta"]:
                f.write(f"  meta: {json.dumps(d['meta'])}\n")
            f.write(f"  HMA   : {fmt_body(d['hma'])}\n")
            f.write(f"  Pharos: {fmt_body(d['pharos'])}\n")
            f.write(f"  raw HMA   : {d['hma_raw']}\n  raw Pharos: {d['pharos_raw']}\n\n")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hma", required=True, help="base URL of a running HMA, e.g. http://127.0.0.1:5100")
    ap.add_argument("--pharos", required=True, help="base URL of Pharos's HTTP API (or HMA again, as a self-test)")
    ap.add_argument("--pharos-token", default=os.environ.get("PHAROS_TOKEN"),
                    help="sent to Pharos as 'Authorization: Bearer TOKEN' (default $PHAROS_TOKEN)")
    ap.add_argument("--hma-label", default="HMA", help="what the HMA server is (version, workers), for the report")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "testdata"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "compare"))
    ap.add_argument("--phases", default="load,compare,bench")
    ap.add_argument("--state", help="what the load phase loaded (default OUT/hma-state.json)")
    ap.add_argument("--bank-prefix", default="CMP_")
    ap.add_argument("--reset", action="store_true", help="DELETE the harness's banks on both sides before loading")
    ap.add_argument("--random", type=int, default=20000, help="random PDQ signals added one by one (0: none)")
    ap.add_argument("--big", type=int, default=0, help="size of a further random bank, e.g. 1000000 (0: none)")
    ap.add_argument("--load-sides", default="hma,pharos",
                    help="load only these sides (hma, pharos), keeping the other side's earlier load in hma-state.json")
    ap.add_argument("--bulk", action="store_true", help="load the --big bank in bulk (SQL for HMA, bulk API for Pharos)")
    ap.add_argument("--bulk-chunk", type=int, default=10000)
    ap.add_argument("--hma-db", help="libpq URL of HMA's database, for --bulk")
    ap.add_argument("--hma-build-cmd", help="shell command that rebuilds HMA's index (run when its index is short)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--load-concurrency", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent replayed requests")
    ap.add_argument("--variants", type=int, default=3, help="near variants per corpus hash")
    ap.add_argument("--max-flips", type=int, default=40)
    ap.add_argument("--query-limit", type=int, default=0, help="query with the first N corpus hashes only (0: all)")
    ap.add_argument("--bank-variants", type=int, default=100, help="queries near entries of each random bank")
    ap.add_argument("--compare-pairs", type=int, default=200)
    ap.add_argument("--upload-lookups", type=int, default=40, help="corpus images sent to POST /m/lookup (x2)")
    ap.add_argument("--url-forms", action="store_true",
                    help="also compare GET /h/hash?url= and GET /m/lookup?url= against corpus files served here on "
                         "127.0.0.1 (both servers must be allowed to fetch from loopback)")
    ap.add_argument("--url-images", type=int, default=20)
    ap.add_argument("--no-scenario", action="store_true",
                    help="skip the curation scenario (creates, renames, updates and deletes CMP_TMP on both sides)")
    ap.add_argument("--examples", type=int, default=4, help="examples per group in the Markdown")
    ap.add_argument("--wait", type=int, default=1800, help="seconds to wait for both indexes")
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--bench-queries", type=int, default=20000)
    args = ap.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.load_sides = [s for s in ("hma", "pharos") if s in args.load_sides.split(",")]
    phases = set(args.phases.split(","))
    args.out = os.path.abspath(args.out)
    args.state = os.path.abspath(args.state or os.path.join(args.out, "hma-state.json"))
    os.makedirs(args.out, exist_ok=True)

    servers = {"hma": Server("hma", args.hma), "pharos": Server("pharos", args.pharos, args.pharos_token)}
    corpus_rows = read_corpus(args.corpus)
    info = {"command": os.environ.get("PHAROS_COMPARE_COMMAND", " ".join(sys.argv)), "hma_url": args.hma,
            "pharos_url": args.pharos, "cpu": cpu_model(), "loadavg": round(os.getloadavg()[0], 2)}
    _, doc = openapi(servers["pharos"])
    if doc:
        info["pharos_version"] = f"{doc.get('info', {}).get('title', '?')} {doc.get('info', {}).get('version', '?')}"

    state = None
    if "load" in phases:
        state = {}
        if args.load_sides != ["hma", "pharos"] and os.path.exists(args.state):
            state = load_state(args)
        phase_load(args, servers, corpus_rows, state)
        missing = [f"{b['name']}:{s}" for b in state["banks"] for s in servers if s not in b["sides"]]
        if missing and (phases - {"load"}):
            raise SystemExit(f"not loaded yet: {', '.join(missing)} (run the load phase with --load-sides for them)")
    comp = bench = None
    if "compare" in phases or "bench" in phases:
        state = state or load_state(args)
        maps, bank_signals = build_maps(state)
        wait_ready(args, servers, state, bank_signals)
        save_state(args, state)
    if "compare" in phases:
        args.media_base = None
        if args.url_forms:
            media, args.media_base = start_media_server(args.corpus)
            log(f"== serving the corpus for the URL forms at {args.media_base}")
        reqs, nq = build_requests(args, state, bank_signals, corpus_rows)
        log(f"== compare: {len(reqs)} requests ({nq} query hashes)")
        comp = run_compare(args, servers, state, reqs, maps, bank_signals, corpus_rows)
        comp["query_hashes"] = nq
        if not args.no_scenario:
            n, sdiffs = run_scenario(args, servers, corpus_rows, state, bank_signals)
            log(f"== curation scenario: {n} steps, {len(sdiffs)} differ")
            comp["requests"] += n
            comp["per_group"]["curation scenario (sequential writes on a scratch bank)"] = n
            comp["differences"] += sdiffs
        write_diffs(os.path.join(args.out, "hma-diffs.txt"), comp)
    if "bench" in phases:
        if not shutil.which("wrk"):
            raise SystemExit("the bench phase needs wrk (apt-get install wrk)")
        with tempfile.TemporaryDirectory() as d:
            bench = phase_bench(args, servers, state, corpus_rows, d)

    md = report(args, state, comp, bench, info)
    with open(os.path.join(args.out, "hma.md"), "w") as f:
        f.write(md)
    slim_state = None
    if state:
        slim_state = {k: v for k, v in state.items() if k != "banks"}
        slim_state["banks"] = [{k: v for k, v in b.items() if k != "signals"} for b in state["banks"]]
        for b in slim_state["banks"]:
            b["sides"] = {s: {k: v for k, v in i.items() if k != "ids"} for s, i in b["sides"].items()}
    with open(os.path.join(args.out, "hma.json"), "w") as f:
        json.dump({"info": info, "load": slim_state, "compare": comp, "bench": bench}, f, indent=1, default=str)
    print(md)


if __name__ == "__main__":
    main()
