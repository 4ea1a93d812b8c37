"""The simulator's HTTPS front: routing, authentication, faults and the request log.

Routes (paths match case-insensitively, as ARM's do; every ARM route needs `api-version`):

  GET    /{tenant}/v2.0/.well-known/openid-configuration          Entra ID discovery
  POST   /{tenant}/oauth2/v2.0/token                               Entra ID token
  GET    .../managedClusters/{cluster}                             managedClusters.get
  POST   .../managedClusters/{cluster}/listClusterUserCredential   ... kubeconfig of the bed
  GET    .../managedClusters/{cluster}/agentPools                  agentPools.list
  GET    .../managedClusters/{cluster}/agentPools/{pool}           agentPools.get
  PUT    .../managedClusters/{cluster}/agentPools/{pool}           agentPools.createOrUpdate
  DELETE .../managedClusters/{cluster}/agentPools/{pool}           agentPools.delete
  GET    /subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}/operations/{id}
  GET    /subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}/operationresults/{id}
  GET|POST|DELETE /_testbed/faults, GET /_testbed/requests, PUT /_testbed/settings   (tests)
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

from tests.testbed.arm import errors
from tests.testbed.arm.entra import TokenError

if TYPE_CHECKING:
    from tests.testbed.arm.simulator import ArmSimulator

_CLUSTER = (
    r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/microsoft\.containerservice/managedclusters/(?P<cluster>[^/]+)"
)
_LOCATION = (
    r"/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.containerservice"
    r"/locations/(?P<loc>[^/]+)"
)
ROUTES = [
    ("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "entra.discovery"),
    ("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "entra.token"),
    ("GET", _CLUSTER, "managedClusters.get"),
    ("POST", _CLUSTER + "/listclusterusercredential", "managedClusters.listClusterUserCredential"),
    ("GET", _CLUSTER + "/agentpools", "agentPools.list"),
    ("GET", _CLUSTER + "/agentpools/(?P<pool>[^/]+)", "agentPools.get"),
    ("PUT", _CLUSTER + "/agentpools/(?P<pool>[^/]+)", "agentPools.createOrUpdate"),
    ("DELETE", _CLUSTER + "/agentpools/(?P<pool>[^/]+)", "agentPools.delete"),
    ("GET", _LOCATION + "/operations/(?P<op>[^/]+)", "operations.get"),
    ("GET", _LOCATION + "/operationresults/(?P<op>[^/]+)", "operationResults.get"),
    ("GET", r"/_testbed/faults", "testbed.faults.list"),
    ("POST", r"/_testbed/faults", "testbed.faults.add"),
    ("DELETE", r"/_testbed/faults", "testbed.faults.clear"),
    ("GET", r"/_testbed/requests", "testbed.requests"),
    ("PUT", r"/_testbed/settings", "testbed.settings"),
]
_COMPILED = [
    (method, re.compile(pattern + "/?$", re.IGNORECASE), op) for method, pattern, op in ROUTES
]


class Reply:
    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


class ArmRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kaito-testbed-arm"
    sim: ArmSimulator  # set on the subclass the simulator makes

    def do_GET(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def log_message(self, format, *args):
        pass  # the request log is the record; stderr stays quiet

    # -- dispatch --------------------------------------------------------------------------

    def _handle(self) -> None:
        started = time.time()
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        raw = self._read_body()
        operation, params = self._route(url.path)
        entry = {
            "time": started,
            "method": self.command,
            "path": url.path,
            "query": query,
            "api_version": query.get("api-version"),
            "operation": operation,
            "client_request_id": self.headers.get("x-ms-client-request-id"),
            "user_agent": self.headers.get("User-Agent"),
            "fault": None,
            "error_code": None,
        }
        try:
            body = self._parse_body(raw, operation)
            entry["body"] = _without_secrets(body)
            entry["pool"] = params.get("pool")
            reply = self._dispatch(operation, params, query, body, entry)
        except errors.ArmError as exc:
            entry["error_code"] = exc.code
            reply = Reply(exc.status, exc.body(), exc.headers)
        except TokenError as exc:
            entry["error_code"] = exc.body["error"]
            reply = Reply(exc.status, exc.body)
        except Exception as exc:  # a bug in the simulator: say so loudly, as a 500
            entry["error_code"] = "SimulatorBug"
            reply = Reply(500, {"error": {"code": "SimulatorBug", "message": repr(exc)}})
        entry["status"] = reply.status
        entry["seconds"] = round(time.time() - started, 4)
        if not operation.startswith("testbed."):
            self.sim.log.append(entry)
        self._send(reply)

    def _route(self, path: str) -> tuple[str, dict]:
        for method, pattern, operation in _COMPILED:
            match = pattern.match(path)
            if match and method == self.command:
                return operation, match.groupdict()
        return "unknown", {}

    def _dispatch(self, operation, params, query, body, entry) -> Reply:
        sim = self.sim
        if operation == "unknown":
            raise errors.ArmError(
                404,
                "NotFound",
                f"No route for {self.command} {urllib.parse.urlsplit(self.path).path}",
            )
        if operation.startswith("testbed."):
            return self._testbed(operation, body)
        if operation == "entra.discovery":
            if not sim.tokens.known_tenant(params["tenant"]):
                raise TokenError(
                    400,
                    "invalid_tenant",
                    f"AADSTS90002: Tenant '{params['tenant']}' not found.",
                    90002,
                )
            return Reply(200, sim.tokens.openid_configuration(sim.base_url, params["tenant"]))
        if operation == "entra.token":
            return Reply(200, sim.tokens.issue(params["tenant"], body or {}))

        # ARM proper: authenticated, versioned, and subject to injected faults.
        reason = sim.tokens.check(self.headers.get("Authorization"), sim.audience)
        if reason:
            raise errors.unauthorized(reason)
        if not query.get("api-version"):
            raise errors.bad_request(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        fault = sim.faults.take(
            ("throttle", "server_error"), operation, self.command, params.get("pool")
        )
        if fault is not None:
            entry["fault"] = fault.kind
            if fault.kind == "throttle":
                raise errors.throttled(fault.retry_after)
            raise errors.internal_error()
        return sim.arm_operation(operation, params, query, body, entry)

    def _testbed(self, operation: str, body) -> Reply:
        sim = self.sim
        if operation == "testbed.faults.list":
            return Reply(200, {"value": [f.to_dict() for f in sim.faults.list()]})
        if operation == "testbed.faults.add":
            try:
                fault = sim.faults.add(**(body or {}))
            except (TypeError, ValueError) as exc:
                raise errors.bad_request("InvalidFault", str(exc)) from None
            return Reply(201, fault.to_dict())
        if operation == "testbed.faults.clear":
            sim.faults.clear()
            return Reply(204)
        if operation == "testbed.requests":
            return Reply(200, {"value": sim.log.entries()})
        if operation == "testbed.settings":
            try:
                sim.configure(**(body or {}))
            except TypeError as exc:
                raise errors.bad_request("InvalidSettings", str(exc)) from None
            return Reply(200, sim.settings())
        raise errors.ArmError(404, "NotFound", operation)

    # -- bodies ----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse_body(self, raw: bytes, operation: str):
        if not raw:
            return None
        if operation == "entra.token":
            return dict(urllib.parse.parse_qsl(raw.decode()))
        try:
            return json.loads(raw)
        except ValueError:
            raise errors.bad_request(
                "InvalidRequestContent", "The request content is not valid JSON."
            ) from None

    def _send(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", self.headers.get("x-ms-client-request-id") or "")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)


def encode_kubeconfig(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _without_secrets(body):
    if isinstance(body, dict) and "client_secret" in body:
        return {**body, "client_secret": "***"}
    return body
