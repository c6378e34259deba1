"""Conformance to a provider's OpenAPI description: a recording proxy and the checks it feeds.

A mixin for :class:`tests._sandbox.SandboxTestCase` subclasses. The proxy
sits on loopback between a backend and the sandbox, mounted under the spec's
server base path (``https://mailsac.com/api`` -> ``/api``), so the paths it
records are exactly the spec's paths; it forwards each request to the
sandbox's ``/<provider>`` prefix and records the exchange. Each record is then
checked against the spec: path template and method, path values, declared
query and body parameters, authentication, and the answer's content type and
fields. Secrets are never recorded: only header names and the auth scheme.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, ClassVar, Dict, List, Set, Tuple
from urllib.parse import parse_qsl, urlparse

from tests._support import REPO

SPECS = os.path.normpath(os.path.join(REPO, os.pardir, "shared", "specs"))
_SKIPPED_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
_TYPES: Dict[str, Tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "integer": (int,),
                                       "number": (int, float), "array": (list,), "object": (dict,)}
_FORMATS = {"email": r"[^@/\s]+@[^@/\s]+"}
"""Formats a path value is checked against (the spec's own ``pattern`` wins)."""

Record = Dict[str, Any]
Route = Tuple[str, str]


def spec_path(env_name: str, filename: str) -> str:
    """The spec file: ``$env_name`` if set, else ``../shared/specs/<filename>`` beside the repo."""
    return os.environ.get(env_name) or os.path.join(SPECS, filename)


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _fields(content_type: str, body: bytes) -> List[str]:
    """The parameter names of a form or JSON request body."""
    if not body:
        return []
    if _media(content_type) == "application/json":
        return list(json.loads(body))
    return [name for name, _ in parse_qsl(body.decode())]


class OpenApiConformance:
    """Record a backend's exchanges with the sandbox and check each against ``spec_file``."""

    spec_file: ClassVar[str]
    provider: str
    exact_fields: ClassVar[bool] = True
    """True: an answer has every field of its schema; False: only no undeclared ones."""
    error_schema: ClassVar[Dict[str, Any]] = {}
    """The body schema of an error status the operation does not list."""
    spec: ClassVar[Dict[str, Any]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        with open(cls.spec_file, encoding="utf-8") as handle:
            cls.spec = json.load(handle)

    def server_url(self) -> str:
        """The spec's base URL; its paths are relative to it."""
        return self.spec["servers"][0]["url"].rstrip("/")

    async def start_recorder(self, url_env: str) -> List[Record]:
        """Point ``$url_env`` at a recording proxy to the sandbox; the list fills as it serves."""
        from aiohttp import web

        records: List[Record] = []
        base_path = urlparse(self.server_url()).path
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", await self._forwarder(records, base_path))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.addAsyncCleanup(runner.cleanup)  # type: ignore[attr-defined]
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        os.environ[url_env] = f"http://127.0.0.1:{runner.addresses[0][1]}{base_path}"
        return records

    async def _forwarder(self, records: List[Record], base_path: str) -> Any:
        """The proxy's handler: strip the base path, forward, record, answer alike."""
        import aiohttp
        from aiohttp import web

        session = aiohttp.ClientSession()
        self.addAsyncCleanup(session.close)  # type: ignore[attr-defined]
        target = f"{self.sandbox.url}/{self.provider}"  # type: ignore[attr-defined]

        async def forward(request: web.Request) -> web.Response:
            assert request.path.startswith(base_path + "/"), f"{request.path} is outside {base_path}"
            path = request.path[len(base_path):]
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIPPED_HEADERS}
            async with session.request(request.method, target + request.path_qs[len(base_path):],
                                       data=body, headers=headers) as answer:
                payload = await answer.read()
                answer_type = answer.headers.get("Content-Type", "")
            records.append(self._record(request, path, body, answer.status, answer_type, payload))
            return web.Response(status=answer.status, body=payload,
                                headers={"Content-Type": answer_type} if answer_type else None)

        return forward

    @staticmethod
    def _record(request: Any, path: str, body: bytes, status: int, answer_type: str,
                payload: bytes) -> Record:
        """One exchange, without secret values: header names and the Authorization scheme only."""
        content_type = request.headers.get("Content-Type", "")
        answer: Any = payload.decode()
        if payload and _media(answer_type) == "application/json":
            answer = json.loads(payload)
        return {"method": request.method, "path": path, "query": list(request.query.keys()),
                "headers": {k.lower() for k in request.headers},
                "auth_scheme": request.headers.get("Authorization", " ").split(" ", 1)[0].lower(),
                "content_type": _media(content_type), "form": _fields(content_type, body),
                "status": status, "answer_type": _media(answer_type), "body": answer}

    def check_records(self, records: List[Record]) -> Set[Route]:
        """Check every record (a subtest each); the (METHOD, template) routes they used."""
        self.assertTrue(records, "the backend made no request through the proxy")  # type: ignore[attr-defined]
        seen = set()
        for record in records:
            with self.subTest(request=f"{record['method']} {record['path']} -> {record['status']}"):  # type: ignore[attr-defined]
                seen.add(self.check_record(record))
        return seen

    def check_record(self, record: Record) -> Route:
        """Assert one recorded exchange fits its operation; return (METHOD, template)."""
        template, operation, path_values = self.operation(record["method"], record["path"])
        declared = {p["name"]: p for p in self.parameters(template, operation)}
        for name, value in path_values.items():
            self.check_path_value(value, self.resolve(declared[name].get("schema", {})))
        query = {n for n, p in declared.items() if p["in"] == "query"}
        self.assertLessEqual(set(record["query"]) - self.auth_names("query"), query)  # type: ignore[attr-defined]
        self.check_auth(record, operation)
        if record["form"]:
            content = self.resolve(operation["requestBody"])["content"]
            self.assertIn(record["content_type"], content)  # type: ignore[attr-defined]
            fields = self.resolve(content[record["content_type"]]["schema"]).get("properties", {})
            self.assertLessEqual(set(record["form"]), set(fields))  # type: ignore[attr-defined]
        self.check_answer(record, operation)
        return record["method"], template

    def check_answer(self, record: Record, operation: Dict[str, Any]) -> None:
        """The status is documented (or an error of ``error_schema``) and the body fits it."""
        answer = operation["responses"].get(str(record["status"]))
        if answer is None:
            self.assertGreaterEqual(record["status"], 400)  # type: ignore[attr-defined]
            self.check_fields(record["body"], self.error_schema)
            return
        content = self.resolve(answer).get("content")
        if not content:
            return
        self.assertIn(record["answer_type"], content)  # type: ignore[attr-defined]
        if record["answer_type"] == "application/json":
            self.check_fields(record["body"], content["application/json"]["schema"])

    def operation(self, method: str, path: str) -> Tuple[str, Dict[str, Any], Dict[str, str]]:
        """The spec's (template, operation, path values) for a request; literal templates win."""
        for template in sorted(self.spec["paths"], key=lambda t: t.count("{")):
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            match = re.fullmatch(regex, path)
            if match and method.lower() in self.spec["paths"][template]:
                return template, self.spec["paths"][template][method.lower()], match.groupdict()
        self.fail(f"{method} {path} is not an operation of {self.server_url()}")  # type: ignore[attr-defined]
        raise AssertionError  # unreachable: fail() raises

    def parameters(self, template: str, operation: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The path item's parameters and the operation's, ``$ref`` resolved."""
        shared = self.spec["paths"][template].get("parameters", [])
        return [self.resolve(p) for p in [*shared, *operation.get("parameters", [])]]

    def check_path_value(self, value: str, schema: Dict[str, Any]) -> None:
        """A path value matches its schema's ``pattern``, or its ``format`` if we know it."""
        pattern = schema.get("pattern") or _FORMATS.get(schema.get("format", ""))
        if pattern:
            self.assertRegex(value, f"^(?:{pattern.strip('^$')})$")  # type: ignore[attr-defined]

    def auth_names(self, where: str) -> Set[str]:
        """Names of the spec's apiKey schemes carried ``where`` (header or query)."""
        schemes = self.spec.get("components", {}).get("securitySchemes", {}).values()
        return {s["name"].lower() if where == "header" else s["name"]
                for s in schemes if s.get("type") == "apiKey" and s.get("in") == where}

    def check_auth(self, record: Record, operation: Dict[str, Any]) -> None:
        """The request satisfies one of the operation's security requirements."""
        requirements = operation.get("security", self.spec.get("security", []))
        schemes = self.spec.get("components", {}).get("securitySchemes", {})
        met = [all(self._carries(record, schemes[name]) for name in requirement)
               for requirement in requirements]
        self.assertTrue(not requirements or any(met),  # type: ignore[attr-defined]
                        f"no security requirement of the operation is met: {requirements}")

    @staticmethod
    def _carries(record: Record, scheme: Dict[str, Any]) -> bool:
        """Whether the request carries the credential of one security scheme."""
        if scheme.get("type") == "http":
            return record["auth_scheme"] == scheme.get("scheme", "").lower()
        if scheme.get("in") == "header":
            return scheme["name"].lower() in record["headers"]
        return scheme.get("in") == "query" and scheme["name"] in record["query"]

    def check_fields(self, body: Any, schema: Dict[str, Any]) -> None:
        """The body's fields are the schema's (all, or a subset), with the declared types."""
        schema = self.resolve(schema)
        if "items" in schema:
            self.assertIsInstance(body, list)  # type: ignore[attr-defined]
            for item in body:
                self.check_fields(item, schema["items"])
            return
        properties = schema.get("properties")
        if properties is None:
            self.check_type(body, schema)
            return
        self.assertIsInstance(body, dict)  # type: ignore[attr-defined]
        if self.exact_fields:
            self.assertEqual(set(body), set(properties))  # type: ignore[attr-defined]
        else:
            self.assertLessEqual(set(body), set(properties))  # type: ignore[attr-defined]
        for name in set(body) & set(properties):
            with self.subTest(field=name):  # type: ignore[attr-defined]
                self.check_fields(body[name], properties[name])

    def check_type(self, value: Any, schema: Dict[str, Any]) -> None:
        """A JSON value has its schema's type (null is let through: 3.0 specs omit ``nullable``)."""
        kinds = _TYPES.get(schema.get("type", ""))
        if value is None or kinds is None:
            return
        self.assertIsInstance(value, kinds)  # type: ignore[attr-defined]
        if bool not in kinds:
            self.assertNotIsInstance(value, bool)  # type: ignore[attr-defined]

    def resolve(self, node: Dict[str, Any]) -> Dict[str, Any]:
        """Follow a local ``$ref`` (``#/components/...``), repeatedly."""
        while "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node
