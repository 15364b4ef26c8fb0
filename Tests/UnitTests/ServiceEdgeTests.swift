import Testing
import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import ProdReadyService

/// The HTTP edge every reference service shares, exercised on a small service built from it (in process:
/// this is the shared module's own logic; the services' suites test the same edge over real sockets).
@Suite("Service edge: tokens and roles, JSON errors for every bad request, request ids, health, metrics, OpenAPI")
struct ServiceEdgeTests {
    static let secret = String(repeating: "s3cr3t-", count: 8)  // 56 bytes: enough for the HS384 forgery too

    struct Thing: Decodable {
        var name: String
        var count: Int
        var tags: [String]?
    }

    /// A service with one route per role and kind of input, and health checks that leave it degraded.
    static func makeService(readiness: Readiness = Readiness(waitingFor: [])) async throws -> (some ApplicationProtocol, TokenAuthority) {
        let authority = try await TokenAuthority(secret: secret)
        let router = ServiceRouter(title: "edge-test", authority: authority, metrics: HTTPMetrics(), logger: Logger(label: "edge-test"))
        router.addHealthRoutes(
            checks: [
                HealthCheck("database") {},
                HealthCheck("cache", critical: false) { throw ServiceError.unavailable("cache_down", "connection refused") },
            ], readiness: readiness)
        router.add(.post, "/api/v1/things", summary: "create a thing", role: .writer, body: ["type": "object"], responses: [202: "accepted"]) { request, context in
            let thing = try await request.decodeJSON(Thing.self, context: context)
            guard thing.name.count <= 64 else { throw ServiceError.badRequest("invalid_field", "name is longer than 64 characters", extra: ["field": "name"]) }
            return Response.json(["status": "accepted", "data": ["name": .string(thing.name), "by": .string(try context.caller().subject)]], status: .accepted)
        }
        router.add(.get, "/api/v1/things/{id}", summary: "read a thing", role: .reader, responses: [200: "the thing"]) { _, context in
            guard context.parameter("id") == "known" else { throw ServiceError.notFound("no thing '\(context.parameter("id"))'") }
            return Response.json(["status": "success", "data": ["id": "known"]])
        }
        router.add(.delete, "/api/v1/things/{id}", summary: "delete a thing", role: .writer, query: [QueryParameter("expected_seq", ["type": "integer"], required: true)], responses: [202: "accepted"]) { request, _ in
            guard let expected = try request.integerQuery("expected_seq") else {
                throw ServiceError.badRequest("missing_parameter", "expected_seq is required", extra: ["field": "expected_seq"])
            }
            throw ServiceError.conflict("optimistic_concurrency_conflict", "the thing moved on", extra: ["expected_seq": .int(expected), "actual_seq": 7])
        }
        let application = ServiceServer.application(router: router, host: "127.0.0.1", port: 0, logger: Logger(label: "edge-test"))
        return (application, authority)
    }

    static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    static func errorBody(_ response: TestResponse) throws -> (code: String, message: String, body: JSONValue) {
        #expect(response.headers[.contentType] == "application/json", "content type \(String(describing: response.headers[.contentType]))")
        let body = try JSONValue.parse(Array(response.body.readableBytesView))
        #expect(body["status"] == "error", "\(body.text)")
        return (try #require(body["error"]?.stringValue, "\(body.text)"), try #require(body["message"]?.stringValue, "\(body.text)"), body)
    }

    /// An unsigned token (`alg: none`) or one under another algorithm, built by hand as an attacker would.
    static func forged(alg: String, signature: String = "") -> String {
        func encode(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        }
        let expires = Int(Date().timeIntervalSince1970) + 3600
        return encode(#"{"alg":"\#(alg)","typ":"JWT"}"#) + "." + encode(#"{"sub":"mallory","roles":["admin"],"tenant":"t1","exp":\#(expires)}"#) + "." + signature
    }

    @Test("401 for a missing, malformed, expired, wrongly signed, alg-none or other-algorithm token; 403 without the role; admin holds every role")
    func tokens() async throws {
        let (application, authority) = try await Self.makeService()
        let otherAuthority = try await TokenAuthority(secret: String(repeating: "another-secret-", count: 3))
        let writer = try await authority.mint(subject: "w", roles: ["writer"], tenant: "t1", ttl: .seconds(60))
        let reader = try await authority.mint(subject: "r", roles: ["reader"], tenant: "t1", ttl: .seconds(60))
        let admin = try await authority.mint(subject: "a", roles: ["admin"], tenant: "t1", ttl: .seconds(60))
        let expired = try await authority.mint(subject: "w", roles: ["writer"], tenant: "t1", ttl: .seconds(-60))
        let wronglySigned = try await otherAuthority.mint(subject: "w", roles: ["admin"], tenant: "t1", ttl: .seconds(60))
        let hs384 = try await JWTKeyCollection().add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha384)
            .sign(ServiceClaims(subject: "w", roles: ["admin"], tenant: "t1", expires: Date().addingTimeInterval(60)))
        let body = ByteBuffer(string: #"{"name":"a","count":1}"#)
        let cases: [(String, HTTPFields, Int, String)] = [
            ("no header", [:], 401, "bearer token is required"),
            ("basic scheme", [.authorization: "Basic dXNlcjpwYXNz"], 401, "must be 'Bearer <token>'"),
            ("not a JWT", Self.bearer("abc.def"), 401, "malformed"),
            ("expired", Self.bearer(expired), 401, "expired"),
            ("wrongly signed", Self.bearer(wronglySigned), 401, "signature does not verify"),
            ("alg none", Self.bearer(Self.forged(alg: "none")), 401, "algorithm 'none' is not accepted"),
            ("HS384 with the same secret", Self.bearer(hs384), 401, "algorithm 'HS384' is not accepted"),
            ("reader on a writer route", Self.bearer(reader), 403, "needs the role 'writer'"),
            ("writer", Self.bearer(writer), 202, ""),
            ("admin", Self.bearer(admin), 202, ""),
        ]
        try await application.test(.router) { client in
            for (name, headers, status, fragment) in cases {
                try await client.execute(uri: "/api/v1/things", method: .post, headers: headers, body: body) { response in
                    #expect(Int(response.status.code) == status, "\(name): \(response.status.code) \(String(buffer: response.body))")
                    guard status >= 400 else { return }
                    let error = try Self.errorBody(response)
                    #expect(error.code == (status == 401 ? "unauthorized" : "forbidden"), "\(name)")
                    #expect(error.message.contains(fragment), "\(name): \(error.message)")
                    if status == 401 { #expect(response.headers[.wwwAuthenticate] == "Bearer", "\(name)") }
                }
            }
            // A reader reads; the open routes need no token.
            try await client.execute(uri: "/api/v1/things/known", method: .get, headers: Self.bearer(reader)) { #expect($0.status == .ok) }
            for open in ["/health", "/health/ready", "/metrics", "/openapi.json"] {
                try await client.execute(uri: open, method: .get) { #expect($0.status == .ok, "\(open): \($0.status)") }
            }
        }
    }

    @Test("every bad request is a 4xx with the JSON error body naming the problem; nothing reaches a 500")
    func badInput() async throws {
        let (application, authority) = try await Self.makeService()
        let headers = Self.bearer(try await authority.mint(subject: "w", roles: ["writer", "reader"], tenant: "t1", ttl: .seconds(60)))
        let oversize = ByteBuffer(string: #"{"name":""# + String(repeating: "x", count: 1 << 21) + #"","count":1}"#)
        let cases: [(String, HTTPRequest.Method, String, ByteBuffer?, Int, String, String?)] = [
            ("malformed JSON", .post, "/api/v1/things", ByteBuffer(string: #"{"name": "a", "#), 400, "malformed_json", nil),
            ("empty body", .post, "/api/v1/things", nil, 400, "malformed_json", nil),
            ("not an object", .post, "/api/v1/things", ByteBuffer(string: "[1,2]"), 400, "invalid_field", nil),
            ("wrong type", .post, "/api/v1/things", ByteBuffer(string: #"{"name":"a","count":"three"}"#), 400, "invalid_field", "count"),
            ("wrong element type", .post, "/api/v1/things", ByteBuffer(string: #"{"name":"a","count":1,"tags":["x",2]}"#), 400, "invalid_field", "tags[1]"),
            ("missing field", .post, "/api/v1/things", ByteBuffer(string: #"{"name":"a"}"#), 400, "missing_field", "count"),
            ("null field", .post, "/api/v1/things", ByteBuffer(string: #"{"name":null,"count":1}"#), 400, "invalid_field", "name"),
            ("over-long name", .post, "/api/v1/things", ByteBuffer(string: #"{"name":""# + String(repeating: "n", count: 65) + #"","count":1}"#), 400, "invalid_field", "name"),
            ("body over 1 MiB", .post, "/api/v1/things", oversize, 413, "payload_too_large", nil),
            ("expected_seq not a number", .delete, "/api/v1/things/known?expected_seq=abc", nil, 400, "invalid_parameter", "expected_seq"),
            ("expected_seq negative", .delete, "/api/v1/things/known?expected_seq=-1", nil, 400, "invalid_parameter", "expected_seq"),
            ("expected_seq missing", .delete, "/api/v1/things/known", nil, 400, "missing_parameter", "expected_seq"),
            ("stale expected_seq", .delete, "/api/v1/things/known?expected_seq=3", nil, 409, "optimistic_concurrency_conflict", nil),
            ("unknown id", .get, "/api/v1/things/nope", nil, 404, "not_found", nil),
            ("unknown route", .get, "/api/v1/nothing", nil, 404, "route_not_found", nil),
            ("wrong method", .patch, "/api/v1/things/known", nil, 405, "method_not_allowed", nil),
        ]
        try await application.test(.router) { client in
            for (name, method, uri, body, status, code, field) in cases {
                try await client.execute(uri: uri, method: method, headers: headers, body: body) { response in
                    #expect(Int(response.status.code) == status, "\(name): \(response.status.code) \(String(buffer: response.body).prefix(300))")
                    let error = try Self.errorBody(response)
                    #expect(error.code == code, "\(name): \(error.body.text)")
                    if let field { #expect(error.body["field"]?.stringValue == field, "\(name): \(error.body.text)") }
                    if status == 405 { #expect(response.headers[.allow] == "GET, DELETE", "\(name): Allow \(String(describing: response.headers[.allow]))") }
                    if status == 409 { #expect(error.body["expected_seq"] == 3 && error.body["actual_seq"] == 7, "\(error.body.text)") }
                }
            }
        }
    }

    @Test("a caller's plain X-Request-ID is echoed, a missing or unsafe one is replaced by a fresh id, errors included")
    func requestIDs() async throws {
        let (application, _) = try await Self.makeService()
        try await application.test(.router) { client in
            try await client.execute(uri: "/health", method: .get, headers: [.requestID: "req-42.a:b_c"]) { #expect($0.headers[.requestID] == "req-42.a:b_c") }
            let first = try await client.execute(uri: "/api/v1/nothing", method: .get) { try #require($0.headers[.requestID]) }
            let second = try await client.execute(uri: "/health", method: .get, headers: [.requestID: "evil\u{7f}value with spaces"]) { try #require($0.headers[.requestID]) }
            #expect(first.count == 36 && second.count == 36 && first != second, "\(first) \(second)")
        }
    }

    @Test("health: a failing non-critical check degrades (200), with latency and reason per check; readiness is 503 naming what it waits for, then 200")
    func health() async throws {
        let readiness = Readiness(waitingFor: ["migrations", "consumer joined"])
        let (application, _) = try await Self.makeService(readiness: readiness)
        try await application.test(.router) { client in
            let document = try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
                return try JSONValue.parse(Array(response.body.readableBytesView))
            }
            #expect(document["status"] == "degraded", "\(document.text)")
            #expect(document["checks"]?["database"]?["status"] == "healthy")
            #expect(document["checks"]?["cache"]?["status"] == "degraded")
            #expect(document["checks"]?["cache"]?["reason"]?.stringValue?.contains("connection refused") == true, "\(document.text)")
            #expect(document["checks"]?["database"]?["latency_ms"] != nil)
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(String(buffer: response.body) == #"{"ready":false,"waiting_for":["consumer joined","migrations"]}"#)
            }
            readiness.satisfy("migrations")
            readiness.satisfy("consumer joined")
            try await client.execute(uri: "/health/ready", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test("the OpenAPI document lists every route with its role, and every documented route answers (no 404 route_not_found, no 405); /metrics counts requests per route and status")
    func openAPIAndMetrics() async throws {
        let (application, authority) = try await Self.makeService()
        let admin = Self.bearer(try await authority.mint(subject: "a", roles: ["admin"], tenant: "t1", ttl: .seconds(60)))
        try await application.test(.router) { client in
            let document = try await client.execute(uri: "/openapi.json", method: .get) { try JSONValue.parse(Array($0.body.readableBytesView)) }
            #expect(document["openapi"] == "3.1.0")
            let paths = try #require(document["paths"]?.objectValue)
            var operations: [(String, String)] = []
            for (path, item) in paths { for method in item.objectValue?.keys ?? [:].keys { operations.append((method.uppercased(), path)) } }
            let expected = ["GET /health", "GET /health/ready", "GET /metrics", "GET /openapi.json", "POST /api/v1/things", "GET /api/v1/things/{id}", "DELETE /api/v1/things/{id}"]
            #expect(Set(operations.map { "\($0.0) \($0.1)" }) == Set(expected))
            #expect(paths["/api/v1/things"]?["post"]?["x-required-role"] == "writer")
            #expect(paths["/api/v1/things/{id}"]?["delete"]?["parameters"]?.arrayValue?.count == 2, "id and expected_seq")
            for (method, path) in operations {
                let uri = path.replacingOccurrences(of: "{id}", with: "known") + (method == "DELETE" ? "?expected_seq=1" : "")
                let body = method == "POST" ? ByteBuffer(string: #"{"name":"a","count":1}"#) : nil
                try await client.execute(uri: uri, method: HTTPRequest.Method(method)!, headers: admin, body: body) { response in
                    #expect(![404, 405].contains(response.status.code) || String(buffer: response.body).contains(#""not_found""#), "\(method) \(path) → \(response.status.code)")
                    #expect(response.status.code < 500, "\(method) \(path) → \(response.status.code)")
                }
            }
            let metrics = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            #expect(metrics.contains(#"http_requests_total{route="/api/v1/things",method="POST",status="202"} 1"#), "\(metrics.prefix(2_000))")
            #expect(metrics.contains(#"http_request_duration_seconds_count{route="/api/v1/things/{id}",method="DELETE"} 1"#), "\(metrics.prefix(2_000))")
        }
    }

    @Test("crash points: armed only with PRODREADY_CHAOS=1, a point of another process is ignored, an unknown or malformed one is a configuration error")
    func crashPoints() async throws {
        let known: Set = ["after_claim", "after_apply"]
        #expect(try CrashPoints(process: "worker", known: known, environment: ["CHAOS_CRASH_POINT": "worker:after_claim"]).armed.isEmpty)
        let armed = try CrashPoints(process: "worker", known: known, environment: ["PRODREADY_CHAOS": "1", "CHAOS_CRASH_POINT": "publisher:after_publish, worker:after_claim"])
        #expect(armed.armed == ["after_claim"])
        armed.reach("after_apply")  // not armed: returns
        let unknown = #expect(throws: ServiceConfigurationError.self) {
            try CrashPoints(process: "worker", known: known, environment: ["PRODREADY_CHAOS": "1", "CHAOS_CRASH_POINT": "worker:after_clam"])
        }
        #expect(unknown?.description == "CHAOS_CRASH_POINT='worker:after_clam' is invalid: expected a point of worker: after_apply, after_claim")
        #expect(throws: ServiceConfigurationError.self) {
            try CrashPoints(process: "worker", known: known, environment: ["PRODREADY_CHAOS": "1", "CHAOS_CRASH_POINT": "after_claim"])
        }
        let short = await #expect(throws: ServiceConfigurationError.self) { _ = try await TokenAuthority(secret: "short") }
        #expect(short?.description == "PRODREADY_JWT_SECRET is invalid: expected at least 32 bytes, got 5", "the secret itself is never printed")
    }
}
