"""The control plane's xDS side: an ADS server (xDS v3, state of the world) and its management API.

Architecture (each module only uses the ones above it)::

    protocol.py   one type on one stream as a pure state machine: subscription, sent/ACKed versions,
                  nonces, NACKs; Envoy's rules (first request, ACK, NACK, stale nonce, wildcard)
    status.py     SYNCED / STALE / NOT SENT / NACKED per proxy and type (for `mesh_ctl proxy-status`)
    debounce.py   100 ms quiet period, 1 s at most: a burst of applies becomes one push
    ads.py        the grpc.aio servicer: identify the node, translate (mesh_ctl.translate), push only the
                  types whose versions moved, CDS -> EDS -> LDS -> RDS -> SDS, wait for ACKs; SDS serves the
                  CA's trust bundle as ``ROOTCA`` (set_trust_bundle, again on every root rotation) and never
                  ``default`` (the workload key stays in the sidecar, its agent serves it)
    web.py        the management API's server: FastAPI on uvicorn, the owner's credential, Host/Origin checks, audit
    verdicts.py   apply's validation verdicts as istiod's webhook metrics (galley_validation_passed/failed)
    answers.py    how the API answers a change: the store's result, 422 refusals, the audit line, 404 services
    policy_api.py set-policy: one block of a service's VirtualService / DestinationRule (fault, retries, lb, outlier)
    api.py        the management API the CLI calls (apply, get, delete, analyze, set-weight, set-policy,
                  proxy-status)

``mesh_ctl/server.py`` wires them to the store and the registry (`mesh_ctl serve`); ``mesh_ctl/client.py`` is
the CLI's side of the management API.

Versions are content hashes: a resource's version is the hash of its deterministic serialization
(:func:`mesh_ctl.translate.resource_version`) and a response's ``version_info`` is the hash of the
(name, version) pairs it carries, so an unchanged state never causes a push, and a restarted control plane
computes the same versions as before.
"""
