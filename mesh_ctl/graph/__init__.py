"""The live service graph the control plane serves (Kiali's graph, for a laptop mesh): `mesh_ctl dashboard`.

    model.py    pure: traffic rows (:mod:`mesh_ctl.telemetry`) + the registry + the stored Istio resources ->
                the graph document (nodes per workload/version, edges with rps, error %, p99, mTLS, the
                measured and configured split, and each service's route, retries, faults, DestinationRule)
    feed.py     the one scraping loop: runs only while someone watches (a page's event stream, a snapshot
                request), scrapes the sidecars in a thread every second, hands each document to subscribers
    access.py   how a browser gets in without the API credential: one-time login codes (asked for with the
                credential) exchanged for a server-side session cookie that opens only the read-only UI
    routes.py   the FastAPI routes: /ui/login, /ui/graph (page), /ui/static/*, /ui/graph.json, /ui/events
                (server-sent events), and POST /v1/ui/login-code for the CLI
    static/     the page: graph.html, graph.js, graph.css, and Cytoscape.js (MIT, vendored from npm)
"""
