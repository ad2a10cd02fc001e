"""Benchmark: the most expensive input the console accepts to read, and a claim from a long queue.

- the largest bodies allowed (just under the 1 MiB cap) built to be expensive: a config with 10,000 profiles, one
  with 10,001 allowed users, 10,000 blackout windows; each is refused (422) and the benchmark prints its median time;
- a pasted roll of 20,000 allowed users in the config form, and `as_list` over 100,000 names;
- claiming the next operation while 2,000 are queued (the fair order per institution): median time of a claim.

The aim is well under a second each: these guard the console against input and queues that grow without bound.
Run with `make bench` (or `python -m tests.perf.bench_limits`); SQLite, in-process.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time

from flask_migrate import upgrade

from console import create_app
from console.extensions import db
from console.models import Cluster, Hub, Institution, User
from console.security import hash_password
from console.services import operations
from console.services.tokens import new_api_token
from tenants.fields import Invalid, as_list
from tests.conftest import CSRF_RE, PASSWORD

REPEATS = 5
IMAGE = "quay.io/jupyter/base-notebook:2025-01-06"
BODIES = {
    "config, 10,000 profiles": ("/api/v1/institutions/north/config", {
        "auth": {"authenticator_class": "dummy"},
        "environment": {"image": IMAGE, "profiles": [{"display_name": f"p{i}"} for i in range(10_000)]}}),
    "config, 10,001 allowed users": ("/api/v1/institutions/north/config", {
        "auth": {"authenticator_class": "github", "client_id": "x", "client_secret": "y" * 20,
                 "allowed_users": [f"user-{i}" for i in range(10_001)]}, "environment": {"image": IMAGE}}),
    "blackouts, 10,000 windows": ("/api/v1/institutions/north/blackouts",
                                  [{"start": "2030-01-01", "end": "2030-01-02"}] * 10_000),
}


def median_ms(run) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    app = create_app({"DATA_DIR": tempfile.mkdtemp(), "DATABASE_URL": "sqlite://", "SECRET_KEY": "bench"})
    with app.app_context():
        upgrade()
        north = Institution(slug="north", name="North")
        cluster = Cluster(name="fast", backend="fake", settings={}, state="ready")
        admin = User(email="admin@example.org", role="institution_admin", institution=north,
                     password_hash=hash_password(PASSWORD))
        db.session.add_all([north, cluster, admin])
        db.session.flush()
        hubs = [Hub(slug=f"north-{i}", institution=north, cluster=cluster, state="running", desired="running",
                    spec={"release": "default"}, backend_state={}) for i in range(6)]
        db.session.add_all(hubs)
        headers = {"Authorization": f"Bearer {new_api_token(admin)}", "Content-Type": "application/json"}
        db.session.commit()
        client = app.test_client()
        rows = []
        for name, (path, body) in BODIES.items():
            data = json.dumps(body)

            def put():
                assert client.put(path, data=data, headers=headers).status_code == 422
            rows.append((f"{name} ({len(data) // 1024} KiB)", median_ms(put)))

        client.post("/login", data={"csrf_token": CSRF_RE.search(client.get("/login").get_data(as_text=True))[1],
                                    "email": admin.email, "password": PASSWORD})
        token = CSRF_RE.search(client.get("/institutions/north/config").get_data(as_text=True))[1]
        roll = "\n".join(f"u{i}" for i in range(20_000))

        def paste():
            assert client.post("/institutions/north/config", data={
                "csrf_token": token, "action": "preview", "auth.authenticator_class": "dummy",
                "auth.allowed_users": roll}).status_code == 422
        rows.append(("config form, a roll of 20,000 users", median_ms(paste)))
        names = "\n".join(f"user{i}" for i in range(100_000))

        def parse():
            try:
                as_list(names)
            except Invalid:
                return
            raise AssertionError("100,000 names accepted")
        rows.append(("as_list, 100,000 names", median_ms(parse)))

        for n in range(2000):
            operations.enqueue(hubs[n % len(hubs)], "restart", "bench")
        db.session.commit()

        def claim():
            operations.requeue(operations.claim_next("bench", 30), 60)
        rows.append(("claim with 2,000 operations queued", median_ms(claim)))
    width = max(len(name) for name, _ in rows)
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:8.1f} ms")


if __name__ == "__main__":
    main()
