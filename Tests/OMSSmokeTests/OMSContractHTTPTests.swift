import Testing
import Foundation
import ProdReadyCore
import ProdReadyInfra
import TestSupport

/// Every route of the spec, in OpenAPI form: what the document must list.
let omsRoutes: Set<String> = [
    "GET /health", "GET /health/ready", "GET /metrics", "GET /openapi.json",
    "POST /api/v1/database/create", "GET /api/v1/database/exists/{db}", "DELETE /api/v1/database/{db}",
    "POST /api/v1/database/{db}/ontology", "GET /api/v1/database/{db}/ontology",
    "POST /api/v1/instances/{db}/async/{class}/create", "PUT /api/v1/instances/{db}/async/{class}/{id}/update",
    "DELETE /api/v1/instances/{db}/async/{class}/{id}/delete", "GET /api/v1/instance/{db}/class/{class}/count",
    "GET /api/v1/instance/{db}/class/{class}/{id}", "GET /api/v1/commands/{command_id}/status", "GET /api/v1/graph/{db}",
    "GET /api/v1/branch/{db}/list", "POST /api/v1/branch/{db}/create", "GET /api/v1/branch/{db}/branch/{branch}/info",
    "GET /api/v1/version/{db}/history", "GET /api/v1/version/{db}/diff", "GET /api/v1/system/config",
]

@Suite("OMS HTTP contract: bad input is a 4xx with the error body, the OpenAPI document is complete, tokens and roles, graceful SIGTERM", .requires(.postgres, .kafka, .redis, .s3))
struct OMSContractHTTPTests {
    @Test("every route's bad input answers 4xx with the JSON error body naming the problem: malformed JSON, wrong types, unknown classes, over-long names, over-size bodies, bad expected_seq, bad idempotency keys", .usesAPI(of: "OMS_BASE_URL"))
    func badInput() async throws {
        try await withOMSDeployment { deployment, _ in
            let oms = try await deployment.client(tenant: uniqueName("tenant"))
            let db = uniqueName("bad_input")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(db)])
            try await completed(oms, "POST", "/api/v1/database/\(db)/ontology", productOntology)
            let created = try await completed(oms, "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "x"]])
            let id = try #require(created["instance_id"]?.stringValue)
            let huge = [UInt8](#"{"name":"big","description":""#.utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 1_100_000) + [UInt8](#""}"#.utf8)
            let cases: [(String, String, String, JSONValue?, [UInt8]?, [(String, String)], Int, String)] = [
                ("malformed JSON", "POST", "/api/v1/database/create", nil, Array(#"{"name": "#.utf8), [], 400, "malformed_json"),
                ("empty body", "POST", "/api/v1/database/create", nil, [], [], 400, "malformed_json"),
                ("name of the wrong type", "POST", "/api/v1/database/create", ["name": 42], nil, [], 400, "invalid_field"),
                ("missing name", "POST", "/api/v1/database/create", ["description": "x"], nil, [], 400, "missing_field"),
                ("name with capitals", "POST", "/api/v1/database/create", ["name": "BadName"], nil, [], 400, "invalid_field"),
                ("over-long name", "POST", "/api/v1/database/create", ["name": .string("a" + String(repeating: "b", count: 63))], nil, [], 400, "invalid_field"),
                ("over-long description", "POST", "/api/v1/database/create", ["name": "okname", "description": .string(String(repeating: "d", count: 1001))], nil, [], 400, "invalid_field"),
                ("body over 1 MiB", "POST", "/api/v1/database/create", nil, huge, [], 413, "payload_too_large"),
                ("unknown property type", "POST", "/api/v1/database/\(db)/ontology", ["id": "Bad", "properties": [["name": "x", "type": "date"]]], nil, [], 400, "invalid_field"),
                ("class id with a colon", "POST", "/api/v1/database/\(db)/ontology", ["id": "a:b"], nil, [], 400, "invalid_field"),
                ("ontology of an unknown database", "POST", "/api/v1/database/nosuchdb/ontology", productOntology, nil, [], 404, "database_not_found"),
                ("unknown class", "POST", "/api/v1/instances/\(db)/async/Nope/create", ["data": ["name": "x"]], nil, [], 404, "class_not_found"),
                ("missing required property", "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["price": 1]], nil, [], 400, "invalid_field"),
                ("property of the wrong type", "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "x", "price": "cheap"]], nil, [], 400, "invalid_field"),
                ("unknown property", "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "x", "colour": "red"]], nil, [], 400, "invalid_field"),
                ("data not an object", "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": [1, 2]], nil, [], 400, "invalid_field"),
                ("instance id with a slash", "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "x"], "instance_id": "a/b"], nil, [], 400, "invalid_field"),
                ("bad idempotency key", "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "x"]], nil, [("Idempotency-Key", "has spaces")], 400, "invalid_header"),
                ("expected_seq missing", "PUT", "/api/v1/instances/\(db)/async/Product/\(id)/update", ["data": ["name": "y"]], nil, [], 400, "missing_parameter"),
                ("expected_seq not a number", "PUT", "/api/v1/instances/\(db)/async/Product/\(id)/update?expected_seq=one", ["data": ["name": "y"]], nil, [], 400, "invalid_parameter"),
                ("expected_seq negative", "DELETE", "/api/v1/instances/\(db)/async/Product/\(id)/delete?expected_seq=-1", nil, nil, [], 400, "invalid_parameter"),
                ("stale expected_seq", "DELETE", "/api/v1/instances/\(db)/async/Product/\(id)/delete?expected_seq=7", nil, nil, [], 409, "optimistic_concurrency_conflict"),
                ("unknown instance", "PUT", "/api/v1/instances/\(db)/async/Product/nobody/update?expected_seq=1", ["data": ["name": "y"]], nil, [], 404, "not_found"),
                ("unknown instance read", "GET", "/api/v1/instance/\(db)/class/Product/nobody", nil, nil, [], 404, "not_found"),
                ("unknown route", "GET", "/api/v1/nothing", nil, nil, [], 404, "route_not_found"),
                ("wrong method", "PATCH", "/api/v1/database/create", nil, nil, [], 405, "method_not_allowed"),
            ]
            for (name, method, path, json, raw, headers, status, code) in cases {
                let answer = try await oms.request(method, path, json: json, rawBody: raw, headers: headers)
                #expect(answer.status == status && answer.body?["error"]?.stringValue == code, "\(name): \(method) \(path) → \(answer)")
                #expect(answer.body?["status"] == "error" && answer.body?["message"]?.stringValue?.isEmpty == false, "\(name): \(answer)")
            }
            #expect(try await oms.get("/api/v1/instance/\(db)/class/Product/count").data?["count"] == 1, "no bad request wrote anything")
        }
    }

    @Test("the OpenAPI document lists exactly the spec's routes, each protected one with its role, and every listed route answers without 404 route_not_found, 405 or 5xx", .usesAPI(of: "OMS_BASE_URL"))
    func openAPI() async throws {
        try await withOMSDeployment { deployment, _ in
            let oms = try await deployment.client(tenant: uniqueName("tenant"))
            let db = uniqueName("api_db")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(db)])
            let document = try #require(try await ServiceClient(baseURL: deployment.baseURL).get("/openapi.json").body)
            #expect(document["openapi"] == "3.1.0")
            var listed: Set<String> = []
            for (path, item) in document["paths"]?.objectValue ?? [:] {
                for (method, operation) in item.objectValue ?? [:] {
                    listed.insert("\(method.uppercased()) \(path)")
                    if path.hasPrefix("/api/") { #expect(operation["x-required-role"] != nil, "\(method) \(path) documents its role") }
                }
            }
            #expect(listed == omsRoutes, "missing: \(omsRoutes.subtracting(listed).sorted()); extra: \(listed.subtracting(omsRoutes).sorted())")
            for route in listed.sorted() {
                let parts = route.split(separator: " ", maxSplits: 1).map(String.init)
                var path = parts[1].replacingOccurrences(of: "{db}", with: db).replacingOccurrences(of: "{class}", with: "Product")
                    .replacingOccurrences(of: "{id}", with: "x").replacingOccurrences(of: "{command_id}", with: "c").replacingOccurrences(of: "{branch}", with: "main")
                if parts[0] == "DELETE" || parts[0] == "PUT" { path += "?expected_seq=0" }
                if path.hasSuffix("/diff") { path += "?from_ref=@0&to_ref=main" }
                let answer = try await oms.request(parts[0], path, json: parts[0] == "GET" || parts[0] == "DELETE" ? nil : ["data": ["name": "x"], "name": "other_db", "id": "Thing", "branch_name": "b1"])
                #expect(answer.status < 500 && answer.body?["error"] != "route_not_found" && answer.status != 405, "\(route) → \(answer)")
            }
        }
    }

    @Test("401 for a missing, malformed, expired, wrongly signed or alg-none token, 403 for a reader writing; health, readiness, metrics and the document need none")
    func tokens() async throws {
        try await withOMSDeployment { deployment, _ in
            let tenant = uniqueName("tenant")
            let expired = try await deployment.token(roles: ["admin"], tenant: tenant, ttl: .seconds(-60))
            let wrongSecret = try await wronglySignedToken(tenant: tenant)
            let reader = try await deployment.token(roles: ["reader"], tenant: tenant)
            let path = "/api/v1/database/create"
            let cases: [(String, String?, Int)] = [
                ("no token", nil, 401), ("malformed", "not-a-jwt", 401), ("expired", expired, 401), ("wrongly signed", wrongSecret, 401),
                ("alg none", unsignedToken(tenant: tenant), 401), ("reader writing", reader, 403),
            ]
            for (name, token, status) in cases {
                let answer = try await ServiceClient(baseURL: deployment.baseURL, token: token).post(path, ["name": "authz_db"])
                #expect(answer.status == status && answer.body?["error"] == (status == 401 ? "unauthorized" : "forbidden"), "\(name): \(answer)")
            }
            #expect(try await ServiceClient(baseURL: deployment.baseURL, token: reader).get("/api/v1/database/exists/authz_db").status == 200, "a reader reads")
            for open in ["/health", "/health/ready", "/metrics", "/openapi.json"] {
                #expect(try await ServiceClient(baseURL: deployment.baseURL).get(open).status == 200, "\(open) without a token")
            }
            let health = try await ServiceClient(baseURL: deployment.baseURL).get("/health")
            #expect(health.body?["status"] == "success" && health.data?["status"] == "healthy", "\(health)")
            let metrics = try await ServiceClient(baseURL: deployment.baseURL).get("/metrics").text
            #expect(metrics.contains(#"http_requests_total{route="/api/v1/database/create",method="POST",status="401"}"#), "\(metrics.prefix(1_000))")
        }
    }

    @Test("SIGTERM: each process exits with status 0 within 10 s; commands sent before and after converge, nothing lost",
          .ownDeployment("OMS_BASE_URL", because: "sends SIGTERM to its processes"))
    func gracefulTermination() async throws {
        try await withOMSDeployment { deployment, _ in
            let oms = try await deployment.client(tenant: uniqueName("tenant"))
            let db = uniqueName("sigterm_db")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(db)])
            try await completed(oms, "POST", "/api/v1/database/\(db)/ontology", productOntology)
            let ledger = OperationLedger()
            var instances: [String: String] = [:]
            func send(_ label: String) async throws {
                for index in 0..<5 {
                    let answer = try await oms.post("/api/v1/instances/\(db)/async/Product/create", ["data": ["name": .string("\(label)-\(index)")]])
                    try #require(answer.status == 202, "\(answer)")
                    let command = try #require(answer.data?["command_id"]?.stringValue)
                    instances[command] = answer.data?["instance_id"]?.stringValue
                    ledger.acknowledged(command)
                }
            }
            for name in [OMSProcessName.publisher, OMSProcessName.instanceWorker, OMSProcessName.projectionWorker, OMSProcessName.api] {
                if name != OMSProcessName.api { try await send("before-\(name)") }
                let process = try deployment.process(name)
                let outcome = try await process.stop(gracePeriod: .seconds(15))
                #expect(outcome.exit == .exited(0), "\(name) ended with \(String(describing: outcome.exit)); log: \(process.tail())")
                #expect(outcome.took < .seconds(10), "\(name) took \(outcome.took) to stop")
                try await process.start(timeout: .seconds(90))
                try await send("after-\(name)")
            }
            let commands = Array(instances.keys)
            let report = try await LossAccounting.converge(ledger, timeout: .seconds(90), interval: .milliseconds(250)) {
                let statuses = try await withThrowingTaskGroup(of: String?.self) { group in
                    for command in commands {
                        group.addTask { try await oms.get("/api/v1/commands/\(command)/status").data?["status"] == "COMPLETED" ? command : nil }
                    }
                    return try await group.reduce(into: [String]()) { if let command = $1 { $0.append(command) } }
                }
                return statuses
            }
            expectNoLoss(report, "commands around four SIGTERMs")
            #expect(try await oms.get("/api/v1/instance/\(db)/class/Product/count").data?["count"] == .int(ledger.count(.acknowledged)))
        }
    }
}

