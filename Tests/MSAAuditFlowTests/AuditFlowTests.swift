import AuditContract
import Foundation
import OMSService
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyNATS
import ProdReadyPostgres
import ProdReadyReliability
import ProdReadyService
import ProdReadyVerification
import Testing
import TestSupport

/// Every event the audit API lists for `query`, following the cursor page by page (`limit` per page).
func listedEvents(_ audit: ServiceClient, _ query: String = "", limit: Int = 1000) async throws -> [JSONValue] {
    var events: [JSONValue] = []
    var cursor: String?
    repeat {
        var path = "/api/v1/audit/events?limit=\(limit)" + (query.isEmpty ? "" : "&" + query)
        if let cursor { path += "&cursor=\(cursor)" }
        let answer = try await audit.get(path)
        try #require(answer.status == 200, "GET \(path) → \(answer)")
        events += answer.data?["events"]?.arrayValue ?? []
        cursor = answer.data?["next_cursor"]?.stringValue
    } while cursor != nil
    return events
}

func eventTypes(_ events: [JSONValue]) -> [String] { events.compactMap { $0["event_type"]?.stringValue }.sorted() }

/// An audit event built by hand, as a producer other than the OMS would publish it.
func plantedEvent(_ type: String, tenant: String, actor: String = "planter", at time: Date = Date(), tags: [String]? = nil) -> EventEnvelope<AuditRecord> {
    .audit(id: UUID().uuidString.lowercased(), at: time, correlationID: nil, causationID: nil, AuditRecord(
        eventType: type, action: "create", actor: AuditActor(id: actor, username: actor, tenantID: tenant), target: AuditTarget(resourceType: "thing", resourceID: "thing-1"),
        tags: tags))
}

func counter(_ name: String, _ deployment: AuditFlowDeployment) async throws -> Double {
    let text = try await ServiceClient(baseURL: deployment.audit.baseURL).get("/metrics").text
    let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
    return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
}

@Suite("MSA audit flow: OMS → outbox → JetStream → audit service → audit API, real processes", .requires(.postgres, .kafka, .redis, .s3, .nats))
struct AuditFlowTests {
    @Test("a database created over HTTP is on the stream (our own consumer sees it, stream AUDIT…, sequence > 0), in audit_events, and served by the audit API; a branch created is audited too",
          .readsStores(of: "AUDIT_BASE_URL", through: ["POSTGRES_URL", "NATS_URL"], because: "reads the stream and the audit table"))
    func completeFlow() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let oms = try await flow.oms.client(tenant: tenant)
            let database = uniqueName("audited_db")
            let accepted = try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
            let eventID = OMSAuditTrail.eventID(commandID: try #require(accepted["command_id"]?.stringValue), aggregateID: database)

            let nats = try await NATSConnection(url: try #require(flow.endpoints.natsURL))
            let mine = try await nats.pullSubscribe(subject: flow.isolation.subjects.wildcard, durable: uniqueName("test").replacingAll(".", with: "_"))
            let onStream: JetStreamMessage = try await eventually("event \(eventID) on the stream", timeout: .seconds(30)) {
                let found = try await mine.fetch(batch: 100, timeout: .milliseconds(500)).first { $0.messageID == eventID }
                return found.map { .done($0) } ?? .pending("not among the messages fetched")
            }
            #expect(onStream.subject == flow.isolation.subjects.subject(of: "schema.database.created"))
            #expect((onStream.metadata?.streamSequence ?? 0) > 0)
            let info = try await nats.consumerInfo(stream: flow.isolation.subjects.streamName, consumer: mine.name)
            #expect(info.stream == flow.isolation.subjects.streamName)

            let postgres = try #require(flow.endpoints.postgresURL)
            let row: (String, String, Bool, String?) = try await eventually("audit_events row of \(eventID)", timeout: .seconds(30)) {
                try await withPostgresClient(postgres) { client in
                    let rows = try await client.query(PostgresQuery(unsafeSQL: "SELECT event_type, actor_id, success, actor_tenant_id FROM \"\(flow.isolation.schema)\".audit_events WHERE event_id = $1", binds: {
                        var binds = PostgresBindings(); binds.append(eventID); return binds
                    }())).collect()
                    return try rows.first.map { .done(try $0.decode((String, String, Bool, String?).self)) } ?? .pending("no row")
                }
            }
            #expect(row.0 == "schema.database.created" && row.1 == "prodready-tests" && row.2 && row.3 == tenant, "\(row)")

            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            let served = try await audit.get("/api/v1/audit/events/\(eventID)")
            #expect(served.status == 200 && served.data?["event_type"] == "schema.database.created" && served.data?["target_resource_id"] == .string(database), "\(served)")
            #expect(served.data?["causation_id"] == accepted["command_id"], "the command caused it")

            // A branch is not a command (a create-only object in S3) and is audited all the same.
            let branched = try await oms.post("/api/v1/branch/\(database)/create", ["branch_name": "audited"])
            try #require(branched.status == 201, "\(branched)")
            let branchEvent = OMSAuditTrail.branchEventID(database: database, branch: "audited")
            let branchServed: ServiceResponse = try await eventually("audit event \(branchEvent) of the branch", timeout: .seconds(30)) {
                let answer = try await audit.get("/api/v1/audit/events/\(branchEvent)")
                return answer.status == 200 ? .done(answer) : .pending("answered \(answer.status)")
            }
            #expect(branchServed.data?["event_type"] == "version.branch.created" && branchServed.data?["target_resource_id"] == .string("\(database)/audited")
                && branchServed.data?["target_branch"] == "audited" && branchServed.data?["actor_id"] == "prodready-tests", "\(branchServed)")
        }
    }

    @Test("every filter returns exactly the events that match and none that do not: actor, action, event type, resource, success, time range, text, tag; a write without a token to the tenant's database is the tenant's event; pages of 2 follow the cursor to the same list; another tenant sees nothing",
          .usesAPI(of: "AUDIT_BASE_URL"))
    func filters() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let oms = try await flow.oms.client(tenant: tenant)
            let database = uniqueName("filter_db")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
            try await completed(oms, "POST", "/api/v1/database/\(database)/ontology", ["id": "Product", "properties": [["name": "name", "type": "string", "required": true]]])
            try await completed(oms, "POST", "/api/v1/instances/\(database)/async/Product/create", ["data": ["name": "Apple"], "instance_id": "i1"])
            try await completed(oms, "POST", "/api/v1/instances/\(database)/async/Product/create", ["data": ["name": "Pear"], "instance_id": "i2"])
            try await completed(oms, "PUT", "/api/v1/instances/\(database)/async/Product/i1/update?expected_seq=1", ["data": ["name": "Zebra Apple"]])
            #expect(try await oms.put("/api/v1/instances/\(database)/async/Product/i1/update?expected_seq=1", ["data": ["name": "late"]]).status == 409)
            let bob = ServiceClient(baseURL: flow.oms.baseURL, token: try await flow.oms.token(roles: ["reader"], tenant: tenant, subject: "bob"))
            #expect(try await bob.post("/api/v1/instances/\(database)/async/Product/create", ["data": ["name": "Nope"]]).status == 403)
            // No token names no tenant: the attempt on this tenant's database is shown to this tenant.
            let stranger = ServiceClient(baseURL: flow.oms.baseURL, token: nil)
            #expect(try await stranger.post("/api/v1/instances/\(database)/async/Product/create", ["data": ["name": "Anon"]]).status == 401)

            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            let expected = ["auth.forbidden", "auth.unauthorized", "instance.created", "instance.created", "instance.update_conflict", "instance.updated", "schema.database.created", "schema.ontology.created"]
            let all: [JSONValue] = try await eventually("the tenant's 8 audit events", timeout: .seconds(30)) {
                let events = try await listedEvents(audit)
                return eventTypes(events) == expected ? .done(events) : .pending("have \(eventTypes(events))")
            }
            let i1 = "\(database)/Product/i1"
            let cases: [(String, [String])] = [
                ("actor_id=bob", ["auth.forbidden"]),
                ("actor_id=anonymous", ["auth.unauthorized"]),
                ("actor_id=prodready-tests", expected.filter { !$0.hasPrefix("auth.") }),
                ("action=update", ["instance.update_conflict", "instance.updated"]),
                ("event_type=instance.created", ["instance.created", "instance.created"]),
                ("target_resource_type=instance&target_resource_id=\(i1)", ["instance.created", "instance.update_conflict", "instance.updated"]),
                ("target_resource_type=database", ["schema.database.created"]),
                ("success=false", ["auth.forbidden", "auth.unauthorized", "instance.update_conflict"]),
                ("success=true", ["instance.created", "instance.created", "instance.updated", "schema.database.created", "schema.ontology.created"]),
                ("q=zebra", ["instance.updated"]),
                ("q=optimistic", []),
                ("q=version", ["instance.update_conflict"]),
                ("tag=security", ["auth.forbidden", "auth.unauthorized"]),
                ("tag=database:\(database)", expected.filter { !$0.hasPrefix("auth.") }),
                ("event_type=instance.created&action=update", []),
            ]
            for (query, types) in cases {
                #expect(eventTypes(try await listedEvents(audit, query)) == types, "\(query)")
            }
            // A time range splits the events at the class's event time: from is inclusive, to exclusive.
            let classEvent = try #require(all.first { $0["event_type"] == "schema.ontology.created" })
            let classTime = try #require(classEvent["event_time"]?.stringValue)
            let split = try #require(InternetTime.parse(classTime.replacingOccurrences(of: "+00:00", with: "Z")))
            let times = all.map { ($0["event_type"]?.stringValue ?? "", InternetTime.parse(($0["event_time"]?.stringValue ?? "").replacingOccurrences(of: "+00:00", with: "Z")) ?? .distantPast) }
            let stamp = InternetTime.format(split)
            #expect(eventTypes(try await listedEvents(audit, "from=\(stamp)")) == times.filter { $0.1 >= split }.map(\.0).sorted(), "from \(stamp)")
            #expect(eventTypes(try await listedEvents(audit, "to=\(stamp)")) == times.filter { $0.1 < split }.map(\.0).sorted(), "to \(stamp)")
            #expect(try await listedEvents(audit, "to=\(stamp)").count + (try await listedEvents(audit, "from=\(stamp)")).count == 8)

            let paged = try await listedEvents(audit, limit: 2)
            #expect(paged.compactMap { $0["event_id"]?.stringValue } == all.compactMap { $0["event_id"]?.stringValue }, "pages of 2 list the same events in the same order")

            let other = try await flow.audit.client(roles: ["auditor"], tenant: uniqueName("other"))
            #expect(try await listedEvents(other).isEmpty)
            let someID = try #require(all.first?["event_id"]?.stringValue)
            #expect(try await other.get("/api/v1/audit/events/\(someID)").status == 404, "another tenant's event does not exist for it")
            #expect(try await audit.get("/api/v1/audit/events/\(someID)").status == 200)

            for bad in ["limit=0", "limit=1001", "success=maybe", "from=yesterday", "cursor=not-a-cursor", "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z"] {
                let answer = try await audit.get("/api/v1/audit/events?\(bad)")
                #expect(answer.status == 400 && answer.body?["error"] != nil, "\(bad): \(answer)")
            }
        }
    }

    @Test("exactly once, counted: 60 creates through the whole path give exactly their 60 audit events by event id; an event published twice (same Nats-Msg-Id, and again under another id as after the duplicate window) is stored once",
          .readsStores(of: "AUDIT_BASE_URL", through: ["NATS_URL"], because: "publishes to the stream directly"))
    func exactlyOnce() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let oms = try await flow.oms.client(tenant: tenant)
            let database = uniqueName("once_db")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
            try await completed(oms, "POST", "/api/v1/database/\(database)/ontology", ["id": "Product", "properties": [["name": "name", "type": "string", "required": true]]])
            let ledger = OperationLedger()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<60 {
                    if index >= 12 { try await group.next() }
                    group.addTask {
                        let instance = "p\(index)"
                        let answer = try await oms.post("/api/v1/instances/\(database)/async/Product/create", ["data": ["name": .string("item \(index)")], "instance_id": .string(instance)])
                        guard answer.status == 202, let command = answer.data?["command_id"]?.stringValue else { return }
                        ledger.acknowledged(OMSAuditTrail.eventID(commandID: command, aggregateID: "\(database):Product:\(instance)"))
                    }
                }
                try await group.waitForAll()
            }
            #expect(ledger.count(.acknowledged) == 60)
            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            let report = try await LossAccounting.converge(ledger, timeout: .seconds(60), interval: .milliseconds(500)) {
                // Pages of 25: the cursor is part of what is checked (a row twice would count as duplicated).
                try await listedEvents(audit, "event_type=instance.created", limit: 25).compactMap { $0["event_id"]?.stringValue }
            }
            #expect(report.passed, "\(report)")

            let duplicatesBefore = try await counter("audit_duplicates_absorbed_total", flow)
            let event = plantedEvent("temp.duplicate", tenant: tenant)
            let nats = try await NATSConnection(url: try #require(flow.endpoints.natsURL))
            let subject = flow.isolation.subjects.subject(of: "temp.duplicate")
            let first = try await nats.publish(subject: subject, payload: try event.encoded(), messageID: event.id)
            let again = try await nats.publish(subject: subject, payload: try event.encoded(), messageID: event.id)
            #expect(!first.duplicate && again.duplicate, "inside the window the stream itself drops the second")
            let late = try await nats.publish(subject: subject, payload: try event.encoded(), messageID: "late-\(event.id)")
            #expect(!late.duplicate, "under another message id the stream stores it again, as after the window")
            try await eventually("the late copy to be absorbed", timeout: .seconds(30)) { try await counter("audit_duplicates_absorbed_total", flow) >= duplicatesBefore + 1 }
            let copies = try await listedEvents(audit, "event_type=temp.duplicate")
            #expect(copies.compactMap { $0["event_id"]?.stringValue } == [event.id], "one row: \(copies)")
        }
    }

    @Test("a poison message (not JSON, an event without an actor, a value Postgres refuses) is dead-lettered with its bytes and reason, counted, and the events after it are still stored",
          .readsStores(of: "AUDIT_BASE_URL", through: ["POSTGRES_URL", "NATS_URL"], because: "publishes to the stream and reads the dead letters"))
    func poisonMessage() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let nats = try await NATSConnection(url: try #require(flow.endpoints.natsURL))
            let lettersBefore = try await counter("audit_dead_letters_total", flow)
            // Bytes of this test's own, so its dead letters are told from others' in a shared (external) schema.
            let garbage = "not json { \(uniqueName("garbage"))"
            _ = try await nats.publish(subject: flow.isolation.subjects.subject(of: "garbage"), payload: Array(garbage.utf8), messageID: uniqueName("garbage"))
            var nameless = plantedEvent("temp.nameless", tenant: tenant)
            nameless.payload.actor = AuditActor(id: "", username: "", tenantID: tenant)
            _ = try await nats.publish(subject: flow.isolation.subjects.subject(of: "temp.nameless"), payload: try nameless.encoded(), messageID: nameless.id)
            // A value Postgres refuses (duration_ms beyond its integer): the batch cannot commit, so each event is
            // stored alone and this one dead-lettered, instead of the consumer retrying the batch for ever.
            var oversized = plantedEvent("temp.oversized", tenant: tenant)
            oversized.payload.durationMS = 3_000_000_000
            _ = try await nats.publish(subject: flow.isolation.subjects.subject(of: "temp.oversized"), payload: try oversized.encoded(), messageID: oversized.id)
            let valid = plantedEvent("temp.after_poison", tenant: tenant)
            _ = try await nats.publish(subject: flow.isolation.subjects.subject(of: "temp.after_poison"), payload: try valid.encoded(), messageID: valid.id)

            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            try await eventually("the event after the poison to be stored", timeout: .seconds(30)) { try await audit.get("/api/v1/audit/events/\(valid.id)").status == 200 }
            #expect(try await audit.get("/api/v1/audit/events/\(nameless.id)").status == 404, "the invalid event is not stored as an event")
            let letters: [(String, String, String?)] = try await withPostgresClient(try #require(flow.endpoints.postgresURL)) { client in
                try await client.query(PostgresQuery(unsafeSQL: "SELECT convert_from(raw, 'UTF8'), reason, event_id FROM \"\(flow.isolation.schema)\".audit_dead_letters ORDER BY stream_sequence")).collect()
                    .map { try $0.decode((String, String, String?).self) }
                    .filter { $0.0 == garbage || $0.2 == nameless.id || $0.2 == oversized.id }
            }
            #expect(letters.count == 3, "\(letters)")
            #expect(letters.first?.0 == garbage && letters.first?.1.contains("undecodable") == true, "\(letters)")
            #expect(letters.dropFirst().first?.2 == nameless.id && letters.dropFirst().first?.1.contains("actor.id is empty") == true, "\(letters)")
            #expect(letters.last?.2 == oversized.id && letters.last?.1.contains("refused by the audit store") == true, "\(letters)")
            let lettersAfter = try await counter("audit_dead_letters_total", flow)
            if flow.isExternal {
                #expect(lettersAfter >= lettersBefore + 3, "audit_dead_letters_total went from \(lettersBefore) to \(lettersAfter) with 3 poison messages")
            } else {
                #expect(lettersAfter == lettersBefore + 3)
            }
        }
    }

    @Test("every audit route refuses a missing, expired, wrongly signed or alg-none token (401) and a token without auditor (403); policy changes need audit-admin; health, readiness and metrics need none",
          .usesAPI(of: "AUDIT_BASE_URL"))
    func security() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let expired = try await flow.audit.token(roles: ["auditor"], tenant: tenant, ttl: .seconds(-60))
            let wrong = try await wronglySignedToken(tenant: tenant)
            let reader = try await flow.audit.token(roles: ["reader"], tenant: tenant)
            let auditor = try await flow.audit.token(roles: ["auditor"], tenant: tenant)
            let routes: [(String, String, JSONValue?)] = [
                ("GET", "/api/v1/system/config", nil), ("GET", "/api/v1/audit/events", nil), ("GET", "/api/v1/audit/events/x", nil), ("GET", "/api/v1/audit/stats", nil),
                ("POST", "/api/v1/audit/reports", ["type": "activity"]), ("GET", "/api/v1/audit/reports/x", nil), ("GET", "/api/v1/audit/retention-policies", nil),
                ("PUT", "/api/v1/audit/retention-policies", ["policies": [["event_type_pattern": "x", "retention_days": 1]]]), ("POST", "/api/v1/audit/retention/run", nil),
            ]
            for (method, path, body) in routes {
                for (name, token) in [("no token", nil), ("expired", expired), ("wrongly signed", wrong), ("alg none", unsignedToken(tenant: tenant))] as [(String, String?)] {
                    let answer = try await ServiceClient(baseURL: flow.audit.baseURL, token: token).request(method, path, json: body)
                    #expect(answer.status == 401 && answer.body?["error"] == "unauthorized", "\(method) \(path), \(name): \(answer)")
                }
                let forbidden = try await ServiceClient(baseURL: flow.audit.baseURL, token: reader).request(method, path, json: body)
                #expect(forbidden.status == 403 && forbidden.body?["error"] == "forbidden", "\(method) \(path) as a reader: \(forbidden)")
            }
            for (method, path, body) in routes.suffix(2) {
                let answer = try await ServiceClient(baseURL: flow.audit.baseURL, token: auditor).request(method, path, json: body)
                #expect(answer.status == 403, "\(method) \(path) needs audit-admin, an auditor got \(answer.status)")
            }
            for open in ["/health", "/health/ready", "/metrics", "/openapi.json"] {
                #expect(try await ServiceClient(baseURL: flow.audit.baseURL).get(open).status == 200, "\(open) without a token")
            }
        }
    }

    @Test("health shows NATS connected with message counts and metrics move with the traffic; a report counts per actor and action with failures; a 30-day temp.* policy removes exactly the old temp events planted and nothing else",
          .readsStores(of: "AUDIT_BASE_URL", through: ["NATS_URL"], because: "plants old events on the stream"))
    func endpointsReportsAndRetention() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let storedBefore = try await counter("audit_events_stored_total", flow)
            let day: TimeInterval = 86_400
            let planted = [
                plantedEvent("temp.old", tenant: tenant, actor: "ann", at: Date().addingTimeInterval(-40 * day)),
                plantedEvent("temp.recent", tenant: tenant, actor: "ann", at: Date().addingTimeInterval(-10 * day)),
                plantedEvent("schema.old", tenant: tenant, actor: "ben", at: Date().addingTimeInterval(-40 * day)),
                plantedEvent("other.old", tenant: tenant, actor: "ben", at: Date().addingTimeInterval(-40 * day)),
                plantedEvent("other.ancient", tenant: tenant, actor: "ben", at: Date().addingTimeInterval(-400 * day)),
            ]
            let nats = try await NATSConnection(url: try #require(flow.endpoints.natsURL))
            for event in planted { _ = try await nats.publish(subject: flow.isolation.subjects.subject(of: event.payload.eventType), payload: try event.encoded(), messageID: event.id) }
            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            let _: Bool = try await eventually("the 5 planted events to be stored", timeout: .seconds(30)) {
                let types = eventTypes(try await listedEvents(audit))
                return types.count == 5 ? .done(true) : .pending("stored: \(types)")
            }
            let storedAfter = try await counter("audit_events_stored_total", flow)
            if flow.isExternal {
                // A shared deployment: the other tests' traffic moves the process-wide counter as well.
                #expect(storedAfter >= storedBefore + 5, "audit_events_stored_total went from \(storedBefore) to \(storedAfter) while 5 events were stored")
            } else {
                #expect(storedAfter == storedBefore + 5)
            }

            let health = try await ServiceClient(baseURL: flow.audit.baseURL).get("/health")
            #expect(health.status == 200 && health.body?["checks"]?["nats"]?["connected"] == true, "\(health)")
            #expect((health.body?["checks"]?["nats"]?["in_msgs"]?.intValue ?? 0) > 0, "\(health)")

            let requested = try await audit.post("/api/v1/audit/reports", ["type": "activity", "from": .string(InternetTime.format(Date().addingTimeInterval(-50 * day)))])
            #expect(requested.status == 202, "\(requested)")
            let reportID = try #require(requested.data?["id"]?.stringValue)
            let report: JSONValue = try await eventually("report \(reportID) to complete", timeout: .seconds(30)) {
                let answer = try await audit.get("/api/v1/audit/reports/\(reportID)")
                return answer.data?["status"] == "completed" ? .done(answer.data ?? .null) : .pending("\(answer)")
            }
            #expect(report["result"]?["total"] == 4, "the ancient event is before 'from': \(report)")
            #expect(report["result"]?["by_actor"] == ["ann": 2, "ben": 2], "\(report)")
            #expect(report["result"]?["failures"] == 0, "\(report)")
            #expect(try await ServiceClient(baseURL: flow.audit.baseURL, token: try await flow.audit.token(roles: ["auditor"], tenant: uniqueName("other"))).get("/api/v1/audit/reports/\(reportID)").status == 404)

            let admin = try await flow.audit.client(roles: ["audit-admin", "auditor"], tenant: tenant)
            let policies = try await admin.put("/api/v1/audit/retention-policies", ["policies": [["event_type_pattern": "temp\\..*", "retention_days": 30, "description": "temporary"]]])
            #expect(policies.status == 200, "\(policies)")
            let invalid = try await admin.put("/api/v1/audit/retention-policies", ["policies": [["event_type_pattern": "(unclosed", "retention_days": 30]]])
            #expect(invalid.status == 400, "an invalid pattern: \(invalid)")
            let run = try await admin.post("/api/v1/audit/retention/run", [:])
            #expect(run.status == 200 && run.data?["by_event_type"] == ["temp.old": 1, "other.ancient": 1], "\(run)")
            #expect(eventTypes(try await listedEvents(audit)) == ["other.old", "schema.old", "temp.recent"])
        }
    }

    @Test("configuration invariants, read live: the stream's duplicate window covers the relay's retry horizon and matches what both services create it with; the consumer's ack wait on the server is the configured one, below the window and above the longest batch; a worker lease is three heartbeats",
          .usesAPI(of: "AUDIT_BASE_URL"))
    func configurationInvariants() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            // One event through the whole path first, so the audit service has stored (and timed) a batch.
            let oms = try await flow.oms.client(tenant: tenant)
            let database = uniqueName("configured_db")
            let accepted = try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
            let eventID = OMSAuditTrail.eventID(commandID: try #require(accepted["command_id"]?.stringValue), aggregateID: database)
            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            try await eventually("audit event \(eventID) served", timeout: .seconds(30)) {
                try await audit.get("/api/v1/audit/events/\(eventID)").status == 200 ? .done(()) : .pending("not stored yet")
            }

            let omsConfig = try await oms.get("/api/v1/system/config")
            let auditConfig = try await audit.get("/api/v1/system/config")
            try #require(omsConfig.status == 200 && auditConfig.status == 200, "OMS: \(omsConfig)\naudit: \(auditConfig)")
            let nats = try await NATSConnection(url: try #require(flow.endpoints.natsURL))
            let stream = try await nats.streamInfo(flow.isolation.subjects.streamName)
            let durable = try #require(auditConfig.body?["consumer"]?["durable"]?.stringValue, "\(auditConfig)")
            let consumer = try await nats.consumerInfo(stream: flow.isolation.subjects.streamName, consumer: durable)
            #expect(stream.configuration.subjects == [flow.isolation.subjects.wildcard], "the stream takes exactly the deployment's audit subjects")
            #expect(stream.configuration.fileStorage, "the audit stream must survive a NATS restart")

            let settings = try AuditFlowLiveSettings(
                oms: try #require(omsConfig.body), audit: try #require(auditConfig.body),
                streamDuplicateWindow: stream.configuration.duplicateWindow, consumerAckWait: consumer.ackWait)
            let invariants = settings.invariants
            for invariant in invariants { print("configuration: \(invariant)") }
            #expect(invariants.violations.isEmpty, "\(invariants.violations.joined(separator: "\n"))")
            #expect(settings.longestBatchSilence > .zero, "a batch was stored, so its silence was measured")
        }
    }

    @Test("load: 120 OMS writes sent at once are each audited exactly once, and propagation from the OMS commit to the stored row stays sub-second at p95 (performance validator)",
          .readsStores(of: "AUDIT_BASE_URL", through: ["POSTGRES_URL"], because: "reads when each row was stored"))
    func load() async throws {
        try await withAuditFlowDeployment { flow in
            let tenant = uniqueName("tenant")
            let oms = try await flow.oms.client(tenant: tenant)
            let database = uniqueName("load_db")
            try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
            try await completed(oms, "POST", "/api/v1/database/\(database)/ontology", ["id": "Product", "properties": [["name": "name", "type": "string", "required": true]]])
            let ledger = OperationLedger()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<120 {
                    group.addTask {
                        let instance = "l\(index)"
                        let answer = try await oms.request("POST", "/api/v1/instances/\(database)/async/Product/create", json: ["data": ["name": .string("item \(index)")], "instance_id": .string(instance)], timeout: .seconds(30))
                        if answer.status == 202, let command = answer.data?["command_id"]?.stringValue {
                            ledger.acknowledged(OMSAuditTrail.eventID(commandID: command, aggregateID: "\(database):Product:\(instance)"))
                        } else {
                            ledger.refused("l\(index)")
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(ledger.count(.acknowledged) == 120, "every one of the 120 writes accepted")
            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            let report = try await LossAccounting.converge(ledger, timeout: .seconds(90), interval: .milliseconds(500)) {
                try await listedEvents(audit, "event_type=instance.created").compactMap { $0["event_id"]?.stringValue }
            }
            #expect(report.passed, "\(report)")

            let delays: [Double] = try await withPostgresClient(try #require(flow.endpoints.postgresURL)) { client in
                var binds = PostgresBindings()
                binds.append(tenant)
                return try await client.query(PostgresQuery(unsafeSQL: "SELECT (extract(epoch FROM created_at - event_time) * 1000)::float8 FROM \"\(flow.isolation.schema)\".audit_events WHERE actor_tenant_id = $1 AND event_type = 'instance.created'", binds: binds))
                    .collect().map { try $0.decode(Double.self) }
            }
            let validator = PerformanceValidator()
            var propagation = await validator.newMeasurement("audit propagation, OMS commit -> stored row (120 writes at once)", thresholds: [.latency(percentile: 95, atMost: .seconds(1))])
            for delay in delays { propagation.record(latency: .microseconds(Int64(max(0, delay) * 1000))) }
            let verdict = await validator.add(propagation)
            #expect(delays.count == 120 && verdict.passed, "\(verdict.report)")
        }
    }
}
