"""Crash test for Carafe's own state, modelled on Qdrant's crasher.

A real gateway (`carafe serve`, small config in a temp folder: embedded engine,
Qdrant Edge, MiniLM) runs while writers act through the CLI and HTTP only:
adapter promotes (`carafe adapters promote` and ``POST /admin/adapters/.../promote``),
ACL changes in a source folder followed by a sync (``POST /admin/index/sync`` while
the gateway runs, `carafe index sync` while it is down), key create/revoke
(`carafe keys`), and chats. Every ``--interval`` seconds, with probability
``--p-kill`` each, the gateway and a running CLI command get kill -9; a killed
gateway gets a CLI sync (itself killed at random) and a restart. After every
restart and at the end it checks:

- every restart succeeds (ready within a timeout);
- zero lost acknowledged writes: the stable channel is the last acknowledged promote
  (or a later unacknowledged one), every acknowledged key works, every acknowledged
  revocation is refused;
- the registry's history matches its channels (`carafe adapters show`);
- no document is served (cited) to a user its source's ACL no longer allows once an
  acknowledged sync has run since the change ("violations"); servings in the window
  before such a sync (an edit not yet synced, a sync killed) are counted apart.

    nice python bench/crash.py                       # 5 minutes of writes, p=0.3 every 5 s
    python bench/crash.py --duration 45 --seed 1     # a short run (the slow test's)

Prints a table of figures; exits 1 when a restart failed, a write was lost or a
violation was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # carafe from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from crash_lab import DOCS, NARROW, WIDE, Lab, Ledger, write_adapter, write_doc

FAULTS = ("restart_failed", "lost_promote", "lost_key", "lost_revocation", "registry_mismatch", "acl_violation")


class Crasher:
    def __init__(self, lab: Lab, ledger: Ledger, seed: int, p_kill: float) -> None:
        self.lab, self.ledger, self.p_kill = lab, ledger, p_kill
        self.rng = random.Random(seed)  # the writers' choices (their order depends on timing)
        self.kills = random.Random(seed)  # the kill decisions: the same for a seed
        self.stop = threading.Event()
        self.tick = 0  # ACL edits, in order
        self.changed: dict[int, int] = {}  # document -> tick of its last edit
        self.synced_upto = 0  # an acknowledged sync started after every edit up to this tick
        self.acl_lock = threading.Lock()

    # writers -------------------------------------------------------------------
    def promote_writer(self) -> None:
        lab, led = self.lab, self.ledger
        while not self.stop.is_set():
            last = led.promotes[-1][0] if led.promotes else 1
            version = self.rng.choice([v for v in (1, 2, 3) if v != last])
            via_cli = self.rng.random() < 0.5
            if not via_cli and not lab.up:
                time.sleep(0.2)
                continue
            with led.lock:
                led.promotes.append([version, None])  # in flight: it may land before the answer does
                attempt = led.promotes[-1]
            if via_cli:
                ok = lab.carafe("adapters", "promote", "style", str(version), "--json").returncode == 0
            else:
                try:
                    r = lab.http("POST", "/admin/adapters/style/promote", lab.keys["admin"], json={"version": version})
                    ok = r.status_code == 200
                except Exception:
                    ok = False
            attempt[1] = ok
            led.count("promotes acknowledged" if ok else "promotes not acknowledged")
            time.sleep(self.rng.uniform(0.1, 0.5))

    def key_writer(self) -> None:
        lab, led = self.lab, self.ledger
        i = 0
        while not self.stop.is_set():
            live = [k for k, v in led.keys.items() if not v["revoked"]]
            if len(live) < 3 or self.rng.random() < 0.5:
                i += 1
                rec = lab.create_key(f"crash-user-{i}", "--groups", "team-a")
                if rec is None:
                    led.count("key writes not acknowledged")
                    continue
                with led.lock:
                    led.keys[rec["key_id"]] = {"key": rec["key"], "revoked": False}
                led.count("keys created (acknowledged)")
                self.check_key(rec["key_id"], "at once")
            else:
                key_id = self.rng.choice(live)
                led.keys[key_id]["revoking"] = True  # in flight: either answer is right until it is acknowledged
                if lab.carafe("keys", "revoke", key_id).returncode != 0:
                    led.count("key writes not acknowledged")
                    continue
                led.keys[key_id]["revoked"] = True
                led.count("keys revoked (acknowledged)")
                self.check_key(key_id, "at once")
            time.sleep(self.rng.uniform(0.2, 0.8))

    def acl_writer(self) -> None:
        lab, led = self.lab, self.ledger
        while not self.stop.is_set():
            if not lab.up:
                time.sleep(0.2)
                continue
            n = self.rng.randrange(DOCS)
            with self.acl_lock:
                groups = NARROW if led.acl.get(n, WIDE) == WIDE else WIDE
                self.tick += 1
                self.changed[n], led.acl[n] = self.tick, groups
                write_doc(lab.docs, n, groups)
                start = self.tick
            led.count("ACL edits")
            try:
                ok = lab.http("POST", "/admin/index/sync", lab.keys["admin"], json={}).status_code == 200
            except Exception:
                ok = False
            if ok:
                self.synced(start)
                led.count("syncs acknowledged (HTTP)")
                self.check_acls("after a sync")
            time.sleep(self.rng.uniform(0.2, 1.0))

    def chatter(self) -> None:
        lab, led = self.lab, self.ledger
        body = {"model": "style", "max_tokens": 3, "messages": [{"role": "user", "content": "Say hello."}]}
        while not self.stop.is_set():
            if not lab.up:
                time.sleep(0.2)
                continue
            try:
                status = lab.http("POST", "/v1/chat/completions", lab.keys["alice"], json=body).status_code
            except Exception:
                status = 0
            led.count("chats answered" if status == 200 else f"chats {status or 'cut off'}")
            if status >= 500 and status != 503:
                led.problem("chat_5xx", f"a chat got {status}")

    # checks ----------------------------------------------------------------------
    def synced(self, start: int) -> None:
        with self.acl_lock:
            self.synced_upto = max(self.synced_upto, start)

    def check_key(self, key_id: str, when: str) -> None:
        lab, led = self.lab, self.ledger
        if not lab.up:
            return
        rec = led.keys[key_id]
        for _ in range(10):  # the gateway re-reads keys when they change; allow it a moment
            try:
                status = lab.http("GET", "/v1/models", rec["key"]).status_code
            except Exception:
                return  # killed meanwhile: checked again after the restart
            if (status == 401) == rec["revoked"] or (rec.get("revoking") and not rec["revoked"]):
                return
            time.sleep(0.3)
        kind = "lost_revocation" if rec["revoked"] else "lost_key"
        led.problem(kind, f"key {key_id} ({'revoked' if rec['revoked'] else 'created'}) got {status} {when}")

    def check_acls(self, when: str) -> None:
        """Ask as bob (team-b) for every document its source no longer shares with team-b."""
        for n in range(DOCS):
            with self.acl_lock:
                narrowed = self.ledger.acl.get(n, WIDE) == NARROW
                synced = self.changed.get(n, 0) <= self.synced_upto
                edit = self.changed.get(n, 0)
            if not narrowed or not self.lab.up:
                continue
            cited = self.lab.cited("bob", n)
            with self.acl_lock:
                still = self.changed.get(n, 0) == edit  # not edited again while we asked
            if cited and still and synced:
                self.ledger.problem("acl_violation", f"doc{n} served to bob {when} after an acknowledged sync")
            elif cited and still:
                self.ledger.count(f"served wider before a sync ({when})")

    def check_registry(self, when: str) -> None:
        lab, led = self.lab, self.ledger
        with led.lock:  # what was acknowledged before we look: later promotes may land while we read
            before = [tuple(p) for p in led.promotes]
        r = lab.carafe("adapters", "show", "style", "--history", "100000", "--json")
        if r.returncode != 0:
            led.problem("registry_mismatch", f"`carafe adapters show` failed {when}: {r.stderr[-300:]}")
            return
        detail = json.loads(r.stdout)
        snapshots = [e["channels"] for e in detail["history"] if "channels" in e]
        if snapshots and snapshots[-1]["stable"] != detail["stable"]:
            led.problem("registry_mismatch", f"stable {detail['stable']} but history says {snapshots[-1]} {when}")
        with led.lock:
            promotes = [tuple(p) for p in led.promotes]
        acked = [i for i, (_, ok) in enumerate(before) if ok]
        if acked:
            possible = {promotes[acked[-1]][0], *(v for v, _ in promotes[acked[-1] + 1 :])}
            if detail["stable"] not in possible:
                led.problem("lost_promote", f"stable is {detail['stable']}, expected one of {possible} {when}")

    def check_all(self, when: str) -> None:
        self.check_registry(when)
        for key_id in list(self.ledger.keys):
            self.check_key(key_id, when)
        self.check_acls(when)

    # the kills ---------------------------------------------------------------------
    def restart(self) -> None:
        lab, led = self.lab, self.ledger
        lab.kill_gateway()
        led.count("kills: gateway")
        print(f"  kill -9 the gateway ({time.strftime('%H:%M:%S')})", flush=True)
        with self.acl_lock:
            start = self.tick
        sync = threading.Thread(target=self._cli_sync, args=(start,))
        sync.start()
        if self.kills.random() < self.p_kill:
            time.sleep(self.kills.uniform(0.5, 4.0))
            if lab.kill_a_cli(self.rng, "sync"):
                led.count("kills: CLI sync")
        sync.join()
        for _ in range(3):
            if lab.start_gateway():
                led.count("restarts")
                self.check_all("after a restart")
                return
            led.problem("restart_failed", f"the gateway did not get ready (see {lab.dir / 'gateway.log'})")
            lab.kill_gateway()

    def _cli_sync(self, start: int) -> None:
        if self.lab.carafe("index", "sync", "--json").returncode in (0, 3):
            self.synced(start)
            self.ledger.count("syncs acknowledged (CLI)")

    def run(self, duration: float, interval: float, max_wall: float | None = None) -> None:
        workers = [self.promote_writer, self.key_writer, self.acl_writer, self.chatter]
        threads = [threading.Thread(target=_guarded(w, self.ledger), daemon=True) for w in workers]
        for t in threads:
            t.start()
        writing = 0.0  # seconds of writes with the gateway up; restarts do not count
        deadline = time.monotonic() + (max_wall or float("inf"))
        while writing < duration and time.monotonic() < deadline and not self.stop.is_set():
            began = time.monotonic()
            time.sleep(interval)
            if self.kills.random() < self.p_kill:
                killed = self.lab.kill_a_cli(self.rng)
                if killed:
                    self.ledger.count(f"kills: CLI {killed}")
            writing += time.monotonic() - began
            if self.kills.random() < self.p_kill:
                print(f"  {writing:.0f} s of writes so far", flush=True)
                self.restart()
        self.stop.set()
        for t in threads:
            t.join(timeout=300)


def _guarded(worker: Callable[[], None], ledger: Ledger) -> Callable[[], None]:
    def run() -> None:
        try:
            worker()
        except Exception as exc:  # a crasher bug must show, not end the run silently
            ledger.problem("crasher_error", f"{worker.__name__}: {type(exc).__name__}: {exc}")

    return run


def setup(lab: Lab, ledger: Ledger) -> None:
    lab.write_config()
    for user, extra in (("admin", ["--admin"]), ("alice", ["--groups", "team-a"]), ("bob", ["--groups", "team-b"])):
        rec = lab.create_key(f"crash-{user}", *extra)
        if rec is None:
            raise SystemExit(f"cannot create the {user} key")
        lab.keys[user] = rec["key"]
    if lab.carafe("index", "sync").returncode != 0:
        raise SystemExit("the first `carafe index sync` failed")
    if not lab.start_gateway():
        raise SystemExit(f"the gateway did not start; see {lab.dir / 'gateway.log'}")
    for seed in (1, 2, 3):
        path = write_adapter(lab.dir / f"adapter-{seed}", lab.models_dir, seed)
        r = lab.http("POST", "/admin/adapters", lab.keys["admin"], json={"path": str(path), "name": "style"})
        if r.status_code != 201:
            raise SystemExit(f"adding the adapter failed: {r.status_code} {r.text}")
    ledger.acl.update({n: WIDE for n in range(DOCS)})


def report(ledger: Ledger, seconds: float, json_out: Path | None) -> int:
    figures = {**{f: 0 for f in FAULTS}, **ledger.figures}
    if json_out is not None:
        json_out.write_text(json.dumps({"seconds": seconds, "figures": figures, "problems": ledger.problems}))
    print(f"\nCarafe crash test: {seconds:.0f} s")
    print(f"{'figure':<48}{'count':>8}")
    for name in sorted(figures, key=lambda k: (k in FAULTS, k)):
        print(f"{name:<48}{figures[name]:>8}")
    for p in ledger.problems[:50]:
        print(" -", p)
    return 1 if any(figures[f] for f in FAULTS) or figures.get("crasher_error") else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--duration", type=float, default=300, help="seconds of writes and kills, restarts not counted (default 300)"
    )
    ap.add_argument("--interval", type=float, default=5, help="seconds between kill decisions (default 5)")
    ap.add_argument("--p-kill", type=float, default=0.3, help="probability of each kill per interval (default 0.3)")
    ap.add_argument(
        "--max-wall", type=float, default=None, help="stop writing after this many seconds, restarts included"
    )
    ap.add_argument("--seed", type=int, default=None, help="the same seed makes the same kill decisions")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures here as JSON")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the run's files here (default: a temp folder)")
    default_models = os.environ.get("CARAFE_TEST_MODELS", ".carafe/models")
    ap.add_argument("--models", type=Path, default=Path(default_models), help="the converted base model cache")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="carafe-crash-"))
    lab, ledger = Lab(workdir.resolve(), args.models.resolve()), Ledger()
    crasher = Crasher(lab, ledger, seed, args.p_kill)
    began = time.monotonic()
    try:
        setup(lab, ledger)
        print(f"  set up in {time.monotonic() - began:.0f} s; writes and kills for {args.duration:.0f} s", flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):  # stop early, still check and report
            signal.signal(sig, lambda *_: crasher.stop.set())
        crasher.run(args.duration, args.interval, args.max_wall)
        crasher.stop.set()
        if not lab.up and not lab.start_gateway():
            ledger.problem("restart_failed", "the final start")
        lab.http("POST", "/admin/index/sync", lab.keys["admin"], json={})
        crasher.synced(crasher.tick)
        crasher.check_all("at the end")
    finally:
        crasher.stop.set()
        lab.kill_gateway()
        for pid in list(lab.cli_running):
            os.kill(pid, 9)
    print(f"files: {workdir}")
    return report(ledger, time.monotonic() - began, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
