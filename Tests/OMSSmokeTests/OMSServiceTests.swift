import Testing
import Foundation
import OMSContract
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyRedis
import ProdReadyS3
import TestSupport

let productOntology: JSONValue = [
    "id": "Product", "label": "Product",
    "properties": [["name": "name", "type": "string", "required": true], ["name": "price", "type": "number", "required": false]],
]

@Suite("OMS over HTTP: the seed's smoke flow and convergence, real processes on real servers", .requires(.postgres, .kafka, .redis, .s3))
struct OMSServiceTests {
    @Test("smoke: database → ontology → instances → count, update with expected_seq, 409 with the conflict's body, idempotent retry and event_id_reuse, a FAILED command with its error and history, branches, history and diff, delete, graph FULL", .usesAPI(of: "OMS_BASE_URL"))
    func smoke() async throws {
        try await withOMSDeployment { deployment, _ in
            let oms = try await deployment.client(tenant: uniqueName("tenant"))
            let db = uniqueName("smoke_db")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(db), "description": "smoke"])
            #expect(try await oms.get("/api/v1/database/exists/\(db)").data?["exists"] == true)
            #expect(try await oms.post("/api/v1/database/create", ["name": .string(db)]).status == 409, "an existing name")

            try await completed(oms, "POST", "/api/v1/database/\(db)/ontology", productOntology)
            let ontologies = try await oms.get("/api/v1/database/\(db)/ontology").data?["ontologies"]?.arrayValue ?? []
            #expect(ontologies.compactMap { $0["id"]?.stringValue } == ["Product"])

            let created = try await completed(oms, "POST", "/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "Widget", "price": 9.5]])
            let id = try #require(created["instance_id"]?.stringValue)
            #expect(try await oms.get("/api/v1/instance/\(db)/class/Product/count").data?["count"] == 1)
            #expect(try await oms.get("/api/v1/instance/\(db)/class/Product/\(id)").data?["seq"] == 1)

            try await completed(oms, "PUT", "/api/v1/instances/\(db)/async/Product/\(id)/update?expected_seq=1", ["data": ["name": "Widget v2", "price": 10]])
            let updated = try await oms.get("/api/v1/instance/\(db)/class/Product/\(id)")
            #expect(updated.data?["seq"] == 2 && updated.data?["data"]?["name"] == "Widget v2", "\(updated)")
            let stale = try await oms.put("/api/v1/instances/\(db)/async/Product/\(id)/update?expected_seq=1", ["data": ["name": "late"]])
            #expect(stale.status == 409 && stale.body?["error"] == "optimistic_concurrency_conflict", "\(stale)")
            #expect(stale.body?["aggregate_id"] == .string("\(db):Product:\(id)") && stale.body?["expected_seq"] == 1 && stale.body?["actual_seq"] == 2, "\(stale)")

            // The same idempotency key: the first result again; other content under it: refused.
            let key = [("Idempotency-Key", uniqueName("key"))]
            let first = try await oms.post("/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "Gadget"]], headers: key)
            let again = try await oms.post("/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "Gadget"]], headers: key)
            #expect(first.status == 202 && again.status == 202 && first.data?["command_id"] == again.data?["command_id"] && first.data?["instance_id"] == again.data?["instance_id"], "\(first) / \(again)")
            let reuse = try await oms.post("/api/v1/instances/\(db)/async/Product/create", ["data": ["name": "Other"]], headers: key)
            #expect(reuse.status == 409 && reuse.body?["error"] == "event_id_reuse", "\(reuse)")
            _ = try await finishedCommand(oms, try #require(first.data?["command_id"]?.stringValue))
            #expect(try await oms.get("/api/v1/instance/\(db)/class/Product/count").data?["count"] == 2, "the retried create made one instance")

            // Branches: main is always there; a branch names main's current position.
            let mainHead = try #require(try await oms.get("/api/v1/branch/\(db)/list").data?["branches"]?.arrayValue?.first { $0["name"] == "main" }?["head"]?.intValue)
            #expect(mainHead > 0)
            let branch = try await oms.post("/api/v1/branch/\(db)/create", ["branch_name": "before-delete", "from_branch": "main"])
            #expect(branch.status == 201 && branch.data?["head"] == .int(mainHead), "\(branch)")
            #expect(try await oms.post("/api/v1/branch/\(db)/create", ["branch_name": "before-delete"]).body?["error"] == "branch_exists")
            #expect(try await oms.post("/api/v1/branch/\(db)/create", ["branch_name": "x", "from_branch": "nope"]).status == 404)
            #expect(try await oms.get("/api/v1/branch/\(db)/branch/before-delete/info").data?["head"] == .int(mainHead))
            #expect(try await oms.get("/api/v1/branch/\(db)/list").data?["branches"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["main", "before-delete"])

            // Deleted, then updated at the version after the delete: the API accepts it (the version is right), the
            // worker cannot apply it (no live instance): FAILED with the error and the whole history.
            try await completed(oms, "DELETE", "/api/v1/instances/\(db)/async/Product/\(id)/delete?expected_seq=2")
            let doomed = try await oms.put("/api/v1/instances/\(db)/async/Product/\(id)/update?expected_seq=3", ["data": ["name": "ghost"]])
            #expect(doomed.status == 202, "\(doomed)")
            let failed = try await finishedCommand(oms, try #require(doomed.data?["command_id"]?.stringValue))
            #expect(failed["status"] == "FAILED" && failed["error"]?.stringValue?.contains("does not exist") == true, "\(failed.text)")
            #expect(failed["history"]?.arrayValue?.compactMap { $0["status"]?.stringValue } == ["PENDING", "PROCESSING", "FAILED"], "\(failed.text)")
            #expect(try await oms.get("/api/v1/instance/\(db)/class/Product/count").data?["count"] == 1)

            // History: the commands, newest first; the diff from the branch to main shows the delete.
            let history = try await oms.get("/api/v1/version/\(db)/history").data?["commands"]?.arrayValue ?? []
            let types = history.compactMap { $0["type"]?.stringValue }
            #expect(types.first == "UPDATE_INSTANCE" && types.last == "CREATE_DATABASE" && types.contains("DELETE_INSTANCE"), "\(types)")
            let sequences = history.compactMap { $0["sequence"]?.intValue }
            #expect(sequences == sequences.sorted(by: >) && history.allSatisfy { $0["actor"] == "prodready-tests" }, "\(history.map(\.text))")
            let diff = try await oms.get("/api/v1/version/\(db)/diff?from_ref=before-delete&to_ref=main")
            #expect(diff.data?["removed"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [id], "\(diff)")
            #expect(diff.data?["added"]?.arrayValue?.isEmpty == true, "\(diff)")
            let early = try await oms.get("/api/v1/version/\(db)/diff?from_ref=@0&to_ref=before-delete")
            #expect(early.data?["added"]?.arrayValue?.count == 2, "both instances exist at the branch: \(early)")
            #expect(try await oms.get("/api/v1/version/\(db)/diff?from_ref=nope&to_ref=main").status == 404)

            let graph = try await eventually("every graph node FULL", timeout: .seconds(30)) {
                let nodes = try await oms.get("/api/v1/graph/\(db)?class=Product").data?["nodes"]?.arrayValue ?? []
                return nodes.count == 1 && nodes.allSatisfy { $0["data_status"] == "FULL" } ? .done(nodes) : .pending("\(nodes.map(\.text))")
            }
            #expect(graph.count == 1)
            let unknown = try await oms.get("/api/v1/commands/\(UUID().uuidString)/status")
            #expect(unknown.status == 404 && unknown.body?["error"] == "command_not_found", "\(unknown)")
            let otherTenant = try await deployment.client(tenant: uniqueName("other"))
            #expect(try await otherTenant.get("/api/v1/database/\(db)/ontology").status == 404, "another tenant's database is invisible")
            #expect(try await otherTenant.get("/api/v1/commands/\(try #require(created["command_id"]?.stringValue))/status").status == 404)

            let database = try await oms.delete("/api/v1/database/\(db)?expected_seq=0")
            #expect(database.status == 409 && database.body?["actual_seq"] == 1, "\(database)")
            try await completed(oms, "DELETE", "/api/v1/database/\(db)?expected_seq=1")
            #expect(try await oms.get("/api/v1/database/exists/\(db)").data?["exists"] == false)
        }
    }

    @Test("convergence of 40 concurrent commands by the seed's whole definition (index in S3, instance row done, deterministic domain event, projection row done, read-model document, graph FULL), with loss accounting",
          .readsStores(of: "OMS_BASE_URL", through: omsStoreVariables, because: "reads the deployment's bucket, schema and Redis keys"))
    func convergence() async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: [.postgres, .kafka, .redis, .s3])
        try await withOMSDeployment(endpoints: endpoints) { deployment, isolation in
            let oms = try await deployment.client(tenant: uniqueName("tenant"))
            let db = uniqueName("converge")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(db)])
            try await completed(oms, "POST", "/api/v1/database/\(db)/ontology", productOntology)

            let ledger = OperationLedger()
            let started = ContinuousClock().now
            // command id → instance id, for every create the API acknowledged
            let instances = try await withThrowingTaskGroup(of: (String, String)?.self) { group in
                for index in 0..<40 {
                    group.addTask {
                        let answer = try await oms.post("/api/v1/instances/\(db)/async/Product/create", ["data": ["name": .string("item \(index)")]])
                        guard answer.status == 202, let command = answer.data?["command_id"]?.stringValue, let instance = answer.data?["instance_id"]?.stringValue else {
                            Issue.record("create \(index) → \(answer)")
                            return nil
                        }
                        ledger.acknowledged(command)
                        return (command, instance)
                    }
                }
                return try await group.reduce(into: [String: String]()) { table, pair in if let pair { table[pair.0] = pair.1 } }
            }
            let s3Endpoint = try #require(endpoints.s3)
            let s3 = S3Client(configuration: try S3Configuration(endpoint: s3Endpoint.url, accessKey: s3Endpoint.accessKey, secretKey: s3Endpoint.secretKey, region: s3Endpoint.region))
            let redis = try RedisClient(url: try #require(endpoints.redisURL))
            try await withPostgresClient(try #require(endpoints.postgresURL)) { postgres in
                let report = try await LossAccounting.converge(ledger, since: started, timeout: .seconds(90), interval: .milliseconds(250)) {
                    try await convergedCommands(db: db, isolation: isolation, instances: instances, oms: oms, s3: s3, redis: redis, postgres: postgres)
                }
                expectNoLoss(report, "40 creates, every convergence check")
            }
        }
    }
}

/// Every command for which all six of the seed's convergence checks hold, once per command.
func convergedCommands(db: String, isolation: OMSIsolation, instances: [String: String], oms: ServiceClient, s3: S3Client, redis: RedisClient, postgres: PostgresClient) async throws -> [String] {
    let schema = "\"\(isolation.schema)\""
    func doneEvents(_ handler: String) async throws -> Set<String> {
        let rows = try await postgres.query(PostgresQuery(unsafeSQL: "SELECT event_id FROM \(schema).processed_events WHERE handler = '\(handler)' AND status = 'done'")).collect()
        return Set(try rows.map { try $0.decode(String.self) })
    }
    let instanceDone = try await doneEvents("oms-instance-worker")
    let projectionDone = try await doneEvents("oms-projection-worker")
    let indexed = Set(try await s3.listKeys(bucket: isolation.bucket, prefix: "indexes/by-event-id/").map { String($0.dropFirst("indexes/by-event-id/".count).dropLast(".json".count)) })
    let nodes = try await oms.get("/api/v1/graph/\(db)?class=Product").data?["nodes"]?.arrayValue ?? []
    let full = Set(nodes.filter { $0["data_status"] == "FULL" }.compactMap { $0["id"]?.stringValue })
    var converged: [String] = []
    for (command, instance) in instances {
        let aggregate = "\(db):Product:\(instance)"
        let domain = UUIDv5.domainEventID(commandID: command, eventType: "INSTANCE_CREATED", aggregateID: aggregate)
        guard indexed.contains(command), instanceDone.contains(command), indexed.contains(domain), projectionDone.contains(domain), full.contains(instance),
            try await redis.get("\(isolation.redisPrefix)doc:\(db):Product:\(instance)") != nil
        else { continue }
        converged.append(command)
    }
    return converged
}
