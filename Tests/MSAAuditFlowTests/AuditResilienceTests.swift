import AuditContract
import Foundation
import OMSService
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyNATS
import ProdReadyPostgres
import ProdReadyService
import ProdReadyVerification
import Synchronization
import Testing
import TestSupport

/// Creates flowing into the OMS of an audit flow at a steady rate; each acknowledged create's audit event id is in
/// the ledger (the OMS derives it from the command), so the audit table can be counted against it.
final class AuditedCreates: Sendable {
    let ledger = OperationLedger()
    let tenant = uniqueName("tenant")
    let database = uniqueName("resilient_db")
    private let sent = Atomic<Int>(0)

    func prepare(_ oms: ServiceClient) async throws {
        try await completed(oms, "POST", "/api/v1/database/create", ["name": .string(database)])
        try await completed(oms, "POST", "/api/v1/database/\(database)/ontology", ["id": "Product", "properties": [["name": "name", "type": "string", "required": true]]])
    }

    /// Sends creates every `interval` until cancelled.
    func run(_ oms: ServiceClient, interval: Duration = .milliseconds(100)) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                let index = sent.add(1, ordering: .relaxed).newValue
                let instance = "r\(index)"
                if let answer = try? await oms.post("/api/v1/instances/\(database)/async/Product/create", ["data": ["name": .string("item \(index)")], "instance_id": .string(instance)]),
                    answer.status == 202, let command = answer.data?["command_id"]?.stringValue
                {
                    ledger.acknowledged(OMSAuditTrail.eventID(commandID: command, aggregateID: "\(database):Product:\(instance)"))
                }
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// The audit events of this workload's creates stored in the deployment's table (one per row: the table's
    /// unique event id is the exactly-once guarantee; the tracking table is checked for a second row apart).
    func stored(_ flow: AuditFlowDeployment) async throws -> [String] {
        try await withPostgresClient(try #require(flow.endpoints.postgresURL)) { client in
            var binds = PostgresBindings()
            binds.append(tenant)
            return try await client.query(PostgresQuery(unsafeSQL: "SELECT event_id FROM \"\(flow.isolation.schema)\".audit_events WHERE actor_tenant_id = $1 AND event_type = 'instance.created'", binds: binds))
                .collect().map { try $0.decode(String.self) }
        }
    }

    /// Waits until `count` more creates than `before` were acknowledged (creates flowing after a fault healed).
    func acknowledgedMore(than before: Int, by count: Int, what: String) async throws {
        try await eventually("\(count) more acknowledged creates \(what)", timeout: .seconds(30)) { self.ledger.count(.acknowledged) >= before + count }
    }

    func converge(_ flow: AuditFlowDeployment, since: ContinuousClock.Instant, timeout: Duration = .seconds(90)) async throws -> LossReport {
        try await LossAccounting.converge(ledger, since: since, timeout: timeout, interval: .milliseconds(500)) { try await self.stored(flow) }
    }
}

/// Rows of the OMS's audit outbox not yet published.
func pendingOutboxRows(_ flow: AuditFlowDeployment) async throws -> Int {
    try await withPostgresClient(try #require(flow.endpoints.postgresURL)) { client in
        try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*)::bigint FROM \"\(flow.omsIsolation.schema)\".outbox_events WHERE status <> 'published'")).collect().first?.decode(Int64.self)
    }.map(Int.init) ?? 0
}

/// The audit flow on a private stack (its components at the lowest priority), for tests that stop infrastructure.
func withPrivateAuditFlow<Result: Sendable>(auditEnvironment: [String: String] = [:], _ body: (AuditFlowDeployment, NativeStack) async throws -> Result) async throws -> Result {
    try await withPrivateStack([.postgres, .kafka, .redis, .s3, .nats], label: "audit-chaos") { stack in
        await lowerStackPriority(stack)
        return try await withAuditFlowDeployment(endpoints: await stack.endpoints, auditEnvironment: auditEnvironment) { try await body($0, stack) }
    }
}

@Suite("MSA audit flow resilience: outages and crashes on private deployments, every event counted", .serialized, .requires(.postgres, .kafka, .redis, .s3, .nats))
struct AuditResilienceTests {
    @Test("NATS stopped while the OMS keeps accepting writes: the outbox grows and the audit service says degraded; after NATS returns every acknowledged write is audited once",
          .ownDeployment("AUDIT_BASE_URL", because: "stops NATS"))
    func natsStopped() async throws {
        try await withPrivateAuditFlow { flow, stack in
            let workload = AuditedCreates()
            let oms = try await flow.oms.client(tenant: workload.tenant)
            try await workload.prepare(oms)
            let load = workload.run(oms)
            defer { load.cancel() }
            try await eventually("audited creates before the outage") { try await workload.stored(flow).count >= 5 }
            try await stack.stop(.nats)
            let acknowledgedBefore = workload.ledger.count(.acknowledged)
            try await eventually("the outbox to grow while NATS is down", timeout: .seconds(30)) { try await pendingOutboxRows(flow) >= 10 }
            #expect(workload.ledger.count(.acknowledged) > acknowledgedBefore + 5, "the OMS kept accepting writes")
            let health = try await ServiceClient(baseURL: flow.audit.baseURL).get("/health")
            #expect(health.status == 200 && health.body?["status"] == "degraded" && health.body?["checks"]?["nats"]?["status"] == "degraded", "\(health)")
            try await stack.start(.nats)
            await lowerStackPriority(stack)
            let healed = ContinuousClock().now
            try await workload.acknowledgedMore(than: workload.ledger.count(.acknowledged), by: 10, what: "after NATS returned")
            load.cancel()
            let report = try await workload.converge(flow, since: healed)
            #expect(report.passed, "\(report)")
            try await eventually("the outbox to drain", timeout: .seconds(30)) { try await pendingOutboxRows(flow) == 0 }
        }
    }

    @Test("the audit service crashes between committing a batch and acknowledging it (crash point after_store, exit 42): after the restart the batch is redelivered, absorbed as duplicates, nothing lost",
          .ownDeployment("AUDIT_BASE_URL", because: "crashes the audit process"))
    func crashAfterStore() async throws {
        try await withPrivateAuditFlow(auditEnvironment: ["PRODREADY_CHAOS": "1", "CHAOS_CRASH_POINT": "audit:after_store"]) { flow, _ in
            let workload = AuditedCreates()
            let oms = try await flow.oms.client(tenant: workload.tenant)
            let audit = try flow.audit.process("audit")
            // The database's own audit event is in the first batch: the crash comes with it.
            try await workload.prepare(oms)
            let crashed = await audit.exit(within: .seconds(60))
            let load = workload.run(oms)
            defer { load.cancel() }
            #expect(crashed?.shellStatus == 42, "the audit process should have exited at after_store: \(String(describing: crashed))")
            try await audit.start(timeout: .seconds(60), extraEnvironment: ["CHAOS_CRASH_POINT": ""])
            let restarted = ContinuousClock().now
            try await workload.acknowledgedMore(than: workload.ledger.count(.acknowledged), by: 10, what: "after the restart")
            load.cancel()
            let report = try await workload.converge(flow, since: restarted)
            #expect(report.passed, "\(report)")
            try await eventually("the redelivered batch to be counted as absorbed duplicates", timeout: .seconds(30)) { try await counter("audit_duplicates_absorbed_total", flow) >= 1 }
        }
    }

    @Test("the audit service SIGKILLed mid-batch and the outbox relay SIGKILLed mid-batch: after each restart no acknowledged write is lost and none is stored twice",
          .ownDeployment("AUDIT_BASE_URL", because: "SIGKILLs its processes"))
    func processesKilled() async throws {
        try await withPrivateAuditFlow { flow, _ in
            let workload = AuditedCreates()
            let oms = try await flow.oms.client(tenant: workload.tenant)
            try await workload.prepare(oms)
            let load = workload.run(oms, interval: .milliseconds(50))
            defer { load.cancel() }
            for name in ["audit", "oms-outbox-relay"] {
                let before = try await workload.stored(flow).count
                try await eventually("audited creates before killing \(name)") { try await workload.stored(flow).count >= before + 10 }
                let process = try flow.audit.process(name)
                try await process.kill()
                try await Task.sleep(for: .seconds(1))  // the fault's hold: down for a second while creates keep coming
                try await process.start(timeout: .seconds(60))
            }
            let restarted = ContinuousClock().now
            try await workload.acknowledgedMore(than: workload.ledger.count(.acknowledged), by: 10, what: "after the restarts")
            load.cancel()
            let report = try await workload.converge(flow, since: restarted)
            #expect(report.passed, "\(report)")
            let twice: Int = try await withPostgresClient(try #require(flow.endpoints.postgresURL)) { client in
                try await Int(client.query(PostgresQuery(unsafeSQL: "SELECT count(*)::bigint FROM (SELECT event_id FROM \"\(flow.isolation.schema)\".event_consumer_tracking GROUP BY consumer_name, event_id HAVING count(*) > 1) t")).collect().first?.decode(Int64.self) ?? -1)
            }
            #expect(twice == 0, "tracking rows twice for one event")
        }
    }

    @Test("Postgres stopped under the audit service: it stops acknowledging (the events stay pending on the stream) and stores every one once Postgres is back",
          .ownDeployment("AUDIT_BASE_URL", because: "stops Postgres"))
    func postgresStopped() async throws {
        try await withPrivateAuditFlow { flow, stack in
            let tenant = uniqueName("tenant")
            let nats = try await NATSConnection(url: try #require(flow.endpoints.natsURL))
            let ledger = OperationLedger()
            try await stack.stop(.postgres)
            for index in 0..<30 {
                let event = plantedEvent("temp.during_outage", tenant: tenant, actor: "p\(index)")
                _ = try await nats.publish(subject: flow.isolation.subjects.subject(of: "temp.during_outage"), payload: try event.encoded(), messageID: event.id)
                ledger.acknowledged(event.id)
            }
            // Long enough for the consumer to have fetched and tried the batch: what is checked is that it did not ack.
            try await Task.sleep(for: .seconds(3))
            let info = try await nats.consumerInfo(stream: flow.isolation.subjects.streamName, consumer: flow.isolation.durable)
            #expect(info.ackFloorStreamSequence < 30 && (Int(info.pending) + info.ackPending) >= 30, "nothing may be acknowledged while Postgres is down: \(info)")
            try await stack.start(.postgres)
            await lowerStackPriority(stack)
            let healed = ContinuousClock().now
            let audit = try await flow.audit.client(roles: ["auditor"], tenant: tenant)
            let report = try await LossAccounting.converge(ledger, since: healed, timeout: .seconds(60), interval: .milliseconds(500)) {
                try await listedEvents(audit, "event_type=temp.during_outage").compactMap { $0["event_id"]?.stringValue }
            }
            #expect(report.passed, "\(report)")
        }
    }
}
