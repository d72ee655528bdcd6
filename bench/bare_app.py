"""The bare baseline bench/throughput.py compares the product with: bottle on waitress
with the product's thread count, a GET that says hello and a POST that inserts one row
into SQLite with the product's durability (WAL, synchronous=FULL).

    python bench/bare_app.py PORT DB_PATH THREADS
"""

from __future__ import annotations

import sqlite3
import sys
import threading

import bottle
import waitress


def main() -> None:
    port, path, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS row (id INTEGER PRIMARY KEY, body TEXT)")
    setup.commit()
    setup.close()
    local = threading.local()
    app = bottle.Bottle()

    @app.get("/hello")
    def hello():
        return "hello"

    @app.post("/insert")
    def insert():
        if getattr(local, "db", None) is None:
            local.db = sqlite3.connect(path, timeout=5, isolation_level=None)
            local.db.execute("PRAGMA synchronous=FULL")
        body = bottle.request.forms.get("description", "")
        local.db.execute("BEGIN IMMEDIATE")
        local.db.execute("INSERT INTO row (body) VALUES (?)", (body,))
        local.db.execute("COMMIT")
        bottle.redirect("/hello", 303)  # as the routing page answers a request

    print("ready", flush=True)
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)


if __name__ == "__main__":
    main()
