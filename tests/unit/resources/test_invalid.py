"""Invalid Istio documents: each is refused with the exact field path and reason.

Each case is a whole document (plus the stored state it is applied on, when the rule is cross-resource).
The expected (path, reason) pairs are the complete list of errors, so a case also fails if the validator
reports anything extra.
"""

from __future__ import annotations

import pytest

from tests.unit.resources.helpers import PAYMENT_DR, errors

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: payment, namespace: default}}
spec:
  hosts: [payment]
  http:
{http}
"""
ROUTE_V1 = """  - route:
    - destination: {host: payment, subset: v1}"""

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payment, namespace: default}}
spec:
  host: payment
{body}
"""
PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: pa, namespace: default}}
spec:
{body}
"""
AP = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ap, namespace: default}}
spec:
{body}
"""
OTHER_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-main, namespace: default}
spec:
  hosts: [payment.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: payment, subset: v1}
"""


def vs(http: str) -> str:
    return VS.format(http=http)


RE2_NOTE = "; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"

CASES: list[tuple[str, str, tuple[str, ...], list[tuple[str, str]]]] = [
    # ---------------------------------------------------------------- envelope and metadata
    (
        "unknown kind",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
        (),
        [
            (
                "kind",
                "Gateway is not supported by minimesh (supported: VirtualService, DestinationRule, "
                "PeerAuthentication, AuthorizationPolicy)",
            )
        ],
    ),
    (
        "unserved version",
        vs(ROUTE_V1).replace("networking.istio.io/v1", "networking.istio.io/v2"),
        (PAYMENT_DR,),
        [("apiVersion", "networking.istio.io/v2 is not served (served: v1, v1alpha3, v1beta1)")],
    ),
    (
        "wrong group",
        vs(ROUTE_V1).replace("networking.istio.io/v1", "security.istio.io/v1"),
        (PAYMENT_DR,),
        [("apiVersion", "VirtualService belongs to networking.istio.io, not 'security.istio.io/v1'")],
    ),
    (
        "missing name",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {}\nspec: {host: a}\n",
        (),
        [("metadata.name", "required field is missing")],
    ),
    (
        "invalid name",
        vs(ROUTE_V1).replace("name: payment,", "name: Payment_Main,"),
        (PAYMENT_DR,),
        [
            (
                "metadata.name",
                "invalid name 'Payment_Main': a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        ],
    ),
    (
        "invalid namespace",
        vs(ROUTE_V1).replace("namespace: default", "namespace: prod.eu"),
        (PAYMENT_DR,),
        [
            (
                "metadata.namespace",
                "invalid namespace 'prod.eu': a lowercase RFC 1123 label must consist of lower case "
                "alphanumeric characters or '-', and must start and end with an alphanumeric character",
            )
        ],
    ),
    ("unknown top-level field", vs(ROUTE_V1) + "extra: 1\n", (PAYMENT_DR,), [("extra", "unknown field")]),
    (
        "unknown metadata field",
        vs(ROUTE_V1).replace("namespace: default}", "namespace: default, owner: me}"),
        (PAYMENT_DR,),
        [("metadata.owner", "unknown field")],
    ),
    # ---------------------------------------------------------------- schema: types, unknown fields, enums
    (
        "hosts not a list",
        VS.format(http=ROUTE_V1).replace("hosts: [payment]", "hosts: payment"),
        (PAYMENT_DR,),
        [("spec.hosts", "must be of type array, got string")],
    ),
    (
        "weight is a string",
        vs('  - route:\n    - destination: {host: payment, subset: v1}\n      weight: "50"'),
        (PAYMENT_DR,),
        [("spec.http[0].route[0].weight", "must be of type integer, got string")],
    ),
    (
        "weight beyond int32",
        vs("  - route:\n    - destination: {host: payment, subset: v1}\n      weight: 4294967296"),
        (PAYMENT_DR,),
        [("spec.http[0].route[0].weight", "must fit in int32 (-2147483648..2147483647), got 4294967296")],
    ),
    (
        "unknown field in spec",
        vs(ROUTE_V1).replace("  hosts: [payment]", "  hosts: [payment]\n  host: payment"),
        (PAYMENT_DR,),
        [("spec.host", "unknown field")],
    ),
    (
        "unknown field in a route",
        vs(ROUTE_V1 + "\n      subset: v1"),
        (PAYMENT_DR,),
        [("spec.http[0].route[0].subset", "unknown field")],
    ),
    (
        "unknown field deep in a match",
        vs(
            "  - match:\n    - uri: {prefix: /a, exactly: /b}\n    route:\n"
            "    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[0].uri.exactly", "unknown field")],
    ),
    (
        "two match types",
        vs(
            "  - match:\n    - uri: {prefix: /a, exact: /b}\n    route:\n    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[0].uri", "at most one of exact, prefix, regex may be set (found exact, prefix)")],
    ),
    (
        "abort.percent is not a field (old bookinfo sample)",
        vs(
            "  - fault:\n      abort: {percent: 100, httpStatus: 500}\n    route:\n"
            "    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].fault.abort.percent", "unknown field")],
    ),
    (
        "bad enum",
        DR.format(body="  trafficPolicy:\n    loadBalancer: {simple: FASTEST}"),
        (),
        [
            (
                "spec.trafficPolicy.loadBalancer.simple",
                "unsupported value 'FASTEST': must be one of UNSPECIFIED, "
                "LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST",
            )
        ],
    ),
    (
        "host missing in a destination rule",
        DR.format(body="").replace("  host: payment\n", "  subsets: []\n"),
        (),
        [("spec.host", "required field is missing")],
    ),
    (
        "header value must be a string (YAML true)",
        vs(
            "  - match:\n    - headers: {x-canary: {exact: true}}\n"
            "    route:\n    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[0].headers[x-canary].exact", "must be of type string, got boolean")],
    ),
    # ---------------------------------------------------------------- CEL rules
    (
        "bad duration",
        vs(ROUTE_V1 + "\n    timeout: 10 seconds"),
        (PAYMENT_DR,),
        [("spec.http[0].timeout", "must be a valid duration greater than 1ms")],
    ),
    (
        "duration below 1ms",
        vs(ROUTE_V1 + "\n    retries: {attempts: 2, perTryTimeout: 500us}"),
        (PAYMENT_DR,),
        [("spec.http[0].retries.perTryTimeout", "must be a valid duration greater than 1ms")],
    ),
    (
        "portLevelMtls without selector",
        PA.format(body="  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}"),
        (),
        [("spec.portLevelMtls", "portLevelMtls requires selector")],
    ),
    (
        "port level mTLS port 0",
        PA.format(body="  selector: {matchLabels: {app: payment}}\n  portLevelMtls:\n    0: {mode: DISABLE}"),
        (),
        [("spec.portLevelMtls", "port must be between 1-65535")],
    ),
    (
        "wildcard in a selector",
        AP.format(body="  selector: {matchLabels: {app: 'pay*'}}"),
        (),
        [("spec.selector.matchLabels[app]", "wildcard not allowed in label value match")],
    ),
    (
        "service accounts with principals",
        AP.format(
            body="  rules:\n  - from:\n    - source:\n"
            "        serviceAccounts: [default/client]\n"
            "        principals: [cluster.local/ns/default/sa/client]"
        ),
        (),
        [("spec.rules[0].from[0].source.serviceAccounts", "Cannot set serviceAccounts with namespaces or principals")],
    ),
    # ---------------------------------------------------------------- Istio semantic rules
    (
        "negative weight",
        vs(
            "  - route:\n    - destination: {host: payment, subset: v1}\n      weight: -1\n"
            "    - destination: {host: payment, subset: v2}\n      weight: 100"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].route[0].weight", "must be >= 0")],
    ),
    (
        "weights summing to 0",
        vs(
            "  - route:\n    - destination: {host: payment, subset: v1}\n      weight: 0\n"
            "    - destination: {host: payment, subset: v2}"
        ),
        (PAYMENT_DR,),
        [
            (
                "spec.http[0].route",
                "total destination weight = 0: with more than one destination, at least one weight must be > 0",
            )
        ],
    ),
    (
        "lookahead is not RE2",
        vs(
            "  - match:\n    - uri: {regex: '/payment(?=x)'}\n    route:\n"
            "    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[0].uri.regex", "invalid perl operator: (?=" + RE2_NOTE)],
    ),
    (
        "backreference is not RE2",
        vs(
            "  - match:\n    - headers: {x-id: {regex: '(a)\\1'}}\n    route:\n"
            "    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[0].headers[x-id].regex", "invalid escape sequence: \\1" + RE2_NOTE)],
    ),
    (
        "empty header prefix",
        vs(
            "  - match:\n    - headers: {x-id: {prefix: ''}}\n    route:\n"
            "    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[0].headers[x-id].prefix", "prefix string match should not be empty")],
    ),
    (
        "no hosts",
        vs(ROUTE_V1).replace("hosts: [payment]", "hosts: []"),
        (PAYMENT_DR,),
        [("spec.hosts", "at least one host is required (delegate VirtualServices are not supported)")],
    ),
    (
        "invalid host",
        vs(ROUTE_V1).replace("hosts: [payment]", "hosts: ['pay ment']"),
        (PAYMENT_DR,),
        [("spec.hosts[0]", "domain name 'pay ment' invalid (label 'pay ment' invalid)")],
    ),
    (
        "* host for the mesh",
        vs(ROUTE_V1).replace("hosts: [payment]", "hosts: ['*']"),
        (PAYMENT_DR,),
        [("spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway")],
    ),
    (
        "duplicate hosts",
        vs(ROUTE_V1)
        .replace("hosts: [payment]", "hosts: ['*.example.com', a.example.com]")
        .replace("host: payment,", "host: a.example.com,"),
        (),
        [("spec.hosts[1]", "duplicate hosts in virtual service: *.example.com & a.example.com")],
    ),
    (
        "route missing",
        vs("  - timeout: 1s"),
        (PAYMENT_DR,),
        [("spec.http[0]", "HTTP route, redirect or direct_response is required")],
    ),
    (
        "duration not in ms",
        vs(ROUTE_V1 + "\n    timeout: 1.0005s"),
        (PAYMENT_DR,),
        [("spec.http[0].timeout", "only durations to ms precision are supported")],
    ),
    (
        "retries with attempts 0",
        vs(ROUTE_V1 + "\n    retries: {attempts: 0, perTryTimeout: 1s}"),
        (PAYMENT_DR,),
        [("spec.http[0].retries", "http retry policy configured when attempts are set to 0 (disabled)")],
    ),
    (
        "negative attempts",
        vs(ROUTE_V1 + "\n    retries: {attempts: -1}"),
        (PAYMENT_DR,),
        [("spec.http[0].retries.attempts", "attempts cannot be negative")],
    ),
    (
        "unknown retryOn",
        vs(ROUTE_V1 + "\n    retries: {attempts: 2, retryOn: 'unavailable,sometimes'}"),
        (PAYMENT_DR,),
        [("spec.http[0].retries.retryOn", "'sometimes' is not a valid retryOn policy")],
    ),
    (
        "mirrorPercentage above 100",
        vs(ROUTE_V1 + "\n    mirror: {host: payment, subset: v2}\n    mirrorPercentage: {value: 150}"),
        (PAYMENT_DR,),
        [("spec.http[0].mirrorPercentage.value", "must be between 0 and 100 (it has 150)")],
    ),
    (
        "mirror and mirrors",
        vs(
            ROUTE_V1 + "\n    mirror: {host: payment, subset: v2}\n"
            "    mirrors: [{destination: {host: payment, subset: v2}}]"
        ),
        (PAYMENT_DR,),
        [("spec.http[0]", "HTTP route cannot contain both mirror and mirrors")],
    ),
    (
        "fault percentage",
        vs(ROUTE_V1 + "\n    fault: {abort: {httpStatus: 503, percentage: {value: 101}}}"),
        (PAYMENT_DR,),
        [("spec.http[0].fault.abort.percentage.value", "percentage 101 is neither 0.0, nor in range [0.0001, 100.0]")],
    ),
    (
        "gRPC status as a number",
        vs(ROUTE_V1 + "\n    fault: {abort: {grpcStatus: '14'}}"),
        (PAYMENT_DR,),
        [
            (
                "spec.http[0].fault.abort.grpcStatus",
                "gRPC status '14' is not supported: use a name such as "
                "'UNAVAILABLE' or 'NOT_FOUND' (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md)",
            )
        ],
    ),
    (
        "set the :path header",
        vs(ROUTE_V1 + "\n    headers: {request: {set: {':path': /x}}}"),
        (PAYMENT_DR,),
        [("spec.http[0].headers.request.set[:path]", 'invalid header ":path": header cannot have ":" prefix')],
    ),
    (
        "remove the Host header",
        vs(ROUTE_V1 + "\n    headers: {response: {remove: [host]}}"),
        (PAYMENT_DR,),
        [("spec.http[0].headers.response.remove[0]", 'invalid header "host": cannot set Host header')],
    ),
    (
        "duplicate match names",
        vs(
            "  - match:\n    - {name: a, uri: {prefix: /a}}\n    - {name: a, uri: {prefix: /b}}\n"
            "    route:\n    - destination: {host: payment, subset: v1}"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].match[1].name", "duplicate match name 'a' in this route")],
    ),
    (
        "invalid subset name",
        DR.format(body="  subsets:\n  - {name: V_1, labels: {version: v1}}"),
        (),
        [("spec.subsets[0].name", "subset name is invalid: V_1")],
    ),
    (
        "duplicate subsets",
        DR.format(body="  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}"),
        (),
        [("spec.subsets[1].name", "duplicate subset names: v1")],
    ),
    (
        "empty traffic policy",
        DR.format(body="  trafficPolicy: {}"),
        (),
        [("spec.trafficPolicy", "traffic policy must have at least one field")],
    ),
    (
        "maxEjectionPercent above 100",
        DR.format(body="  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 120}"),
        (),
        [("spec.trafficPolicy.outlierDetection.maxEjectionPercent", "percentage 120 is not in range 0..100")],
    ),
    (
        "negative connection limit",
        DR.format(body="  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: -1}}"),
        (),
        [("spec.trafficPolicy.connectionPool.tcp.maxConnections", "max connections must be non-negative")],
    ),
    (
        "mutual tls without certificates",
        DR.format(body="  trafficPolicy:\n    tls: {mode: MUTUAL}"),
        (),
        [
            ("spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls"),
            ("spec.trafficPolicy.tls.privateKey", "private key required for mutual tls"),
        ],
    ),
    (
        "warmup aggression below 1 (Istio testdata)",
        DR.format(body="  trafficPolicy:\n    loadBalancer:\n      warmup: {duration: 300s, aggression: 0.3}"),
        (),
        [("spec.trafficPolicy.loadBalancer.warmup.aggression", "aggression should be greater than or equal to 1")],
    ),
    (
        "CUSTOM authorization",
        AP.format(body="  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]"),
        (),
        [("spec.action", "CUSTOM authorization (ext_authz providers) is not supported")],
    ),
    (
        "principal with spiffe://",
        AP.format(
            body="  rules:\n  - from:\n    - source:\n        principals: "
            "['spiffe://cluster.local/ns/default/sa/client']"
        ),
        (),
        [
            (
                "spec.rules[0].from[0].source.principals[0]",
                "principals are written without 'spiffe://' (Istio adds "
                "it, so this never matches): use 'cluster.local/ns/default/sa/client'",
            )
        ],
    ),
    (
        "DENY without rules",
        AP.format(body="  action: DENY"),
        (),
        [
            (
                "spec.rules",
                "DENY action without `rules` is meaningless as it will never be triggered, add an empty "
                "rule `{}` if you want it be triggered for every request",
            )
        ],
    ),
    (
        "bad ip block",
        AP.format(body="  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.0/33]}"),
        (),
        [("spec.rules[0].from[0].source.ipBlocks[0]", "bad CIDR range (10.0.0.0/33)")],
    ),
    (
        "bad port in an operation",
        AP.format(body="  rules:\n  - to:\n    - operation: {ports: [http]}"),
        (),
        [("spec.rules[0].to[0].operation.ports[0]", "bad port (http): must be a number in 0..65535")],
    ),
    (
        "unknown condition key",
        AP.format(body="  rules:\n  - when:\n    - {key: request.method, values: [POST]}"),
        (),
        [("spec.rules[0].when[0].values", "unknown attribute: request.method")],
    ),
    (
        "targetRefs",
        AP.format(body="  targetRefs:\n  - {kind: Service, group: '', name: payment}\n  rules: [{}]"),
        (),
        [
            (
                "spec.targetRefs",
                "targetRefs binds a policy to waypoints or gateways, which minimesh does not have: use "
                "selector.matchLabels",
            )
        ],
    ),
    # ---------------------------------------------------------------- cross-resource
    (
        "unknown subset",
        vs(
            "  - route:\n    - destination: {host: payment, subset: v1}\n      weight: 90\n"
            "    - destination: {host: payment, subset: v3}\n      weight: 10"
        ),
        (PAYMENT_DR,),
        [("spec.http[0].route[1].destination.subset", "subset v3 not found in DestinationRule payment (host payment)")],
    ),
    (
        "subset without any destination rule",
        vs(ROUTE_V1),
        (),
        [
            (
                "spec.http[0].route[0].destination.subset",
                "subset v1 not found: no DestinationRule for host payment "
                "(payment.default.svc.cluster.local) is visible from namespace default",
            )
        ],
    ),
    (
        "unknown mirror subset",
        vs(ROUTE_V1 + "\n    mirror: {host: payment, subset: canary}"),
        (PAYMENT_DR,),
        [("spec.http[0].mirror.subset", "subset canary not found in DestinationRule payment (host payment)")],
    ),
    (
        "destination rule not exported to the namespace",
        vs(ROUTE_V1),
        (
            PAYMENT_DR.replace("namespace: default}", "namespace: other}").replace(
                "host: payment", "host: payment.default.svc.cluster.local\n  exportTo: ['.']"
            ),
        ),
        [
            (
                "spec.http[0].route[0].destination.subset",
                "subset v1 not found: no DestinationRule for host payment "
                "(payment.default.svc.cluster.local) is visible from namespace default",
            )
        ],
    ),
    (
        "conflicting hosts",
        vs(ROUTE_V1),
        (PAYMENT_DR, OTHER_VS),
        [
            (
                "spec.hosts[0]",
                "host payment (payment.default.svc.cluster.local) is already claimed by VirtualService "
                "default/payment-main: merge the routes into one VirtualService (for sidecars Istio uses only "
                "the oldest; istioctl analyze IST0109)",
            )
        ],
    ),
]


@pytest.mark.parametrize(("text", "existing", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_document_is_refused_with_path_and_reason(
    text: str, existing: tuple[str, ...], expected: list[tuple[str, str]]
) -> None:
    assert errors(text, *existing) == expected


def test_there_are_many_cases() -> None:
    assert len(CASES) >= 30


def test_rendering_names_file_resource_path_and_reason() -> None:
    from mesh_ctl.resources import validate_batch
    from tests.unit.resources.helpers import docs, state

    text = vs(
        "  - route:\n    - destination: {host: payment, subset: v1}\n      weight: -1\n"
        "    - destination: {host: payment, subset: v2}\n      weight: 1"
    )
    report = validate_batch(docs(text, "vs.yaml"), state(PAYMENT_DR))
    assert [str(p) for p in report.errors] == [
        "vs.yaml: VirtualService default/payment: spec.http[0].route[0].weight: must be >= 0"
    ]


def test_all_problems_of_a_batch_are_collected() -> None:
    text = (
        vs(ROUTE_V1 + "\n    timeout: 1x")
        + "---\n"
        + DR.format(body="  trafficPolicy: {}")
        + "---\n"
        + AP.format(body="  action: CUSTOM\n  rules: [{}]")
    )
    got = errors(text)
    assert got == [
        ("spec.http[0].timeout", "must be a valid duration greater than 1ms"),
        ("spec.trafficPolicy", "traffic policy must have at least one field"),
        ("spec.action", "CUSTOM authorization (ext_authz providers) is not supported"),
    ]


def test_the_same_resource_twice_in_one_batch() -> None:
    got = errors(vs(ROUTE_V1) + "---\n" + vs(ROUTE_V1), PAYMENT_DR)
    assert got == [
        (
            "metadata.name",
            "VirtualService default/payment is also defined in test.yaml document #1: one definition per apply",
        )
    ]
