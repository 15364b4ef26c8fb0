import ArgumentParser
import AuditContract
import Foundation
import Logging
import PostgresNIO
import ProdReadyCore
import ProdReadyInfra
import ProdReadyNATS
import OMSChaos
import ProdReadyPerformance
import ProdReadyPostgres
import ProdReadyReliability
import ProdReadyService
import ProdReadyVerification

/// `prodready bench audit`: the audit pipeline's figures of SPEC-audit on a private embedded stack.
struct AuditBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Measure the audit flow: propagation from the OMS commit to the stored row, sustained ingest, and a filtered page over a million events.",
        discussion: """
        Boots a private stack (postgres, kafka, redis, s3, nats), the OMS, its outbox relay and the audit service, then: \
        (1) commits audit outbox rows into the OMS's outbox at --rate per second for --seconds, in transactions of 10 ms \
        worth of events, as the OMS's instance worker writes them (the OMS's API takes about 170 accepted creates/s on \
        this machine, so they cannot be the source of 1,000 events/s), and records for each event the time from its commit \
        (event_time) until the audit service committed its row (created_at); (1b) the whole path from HTTP: sends \
        --http-rate writes per second (more than the 1,000 events/s the path must carry) for --http-seconds without a token to a database the bench created (a \
        credential-stuffing burst: the OMS answers 401 and audits each attempt for the database's owner), then checks \
        by request id that every refused write was stored exactly once and how fast the path carried them; (2) stops the audit service, publishes \
        --ingest events to the stream, starts it again and measures how fast it stores them; (3) loads --rows events \
        into audit_events with one INSERT … SELECT over generate_series (50 actors, 20 event types, 30 days) and vacuums it, then \
        times --queries filtered pages of 50 through the audit API. Prints percentiles next to the targets and each \
        process's peak resident memory; everything is torn down afterwards. A missed target exits with status 1.
        """
    )

    @OptionGroup var options: CommonOptions
    @Option(help: "Audit events per second committed in the propagation phase.") var rate: Int = 1000
    @Option(help: "Length of the propagation phase in seconds.") var seconds: Int = 20
    @Option(help: "Events published for the ingest phase.") var ingest: Int = 50_000
    @Option(help: "Events loaded for the query phase.") var rows: Int = 1_000_000
    @Option(help: "Filtered pages requested in the query phase.") var queries: Int = 300
    /// Above the 1,000 events/s the path must carry: offered exactly 1,000/s, the measured rate could only fall short of it.
    @Option(help: "Writes without a token sent per second to the OMS in the whole-path phase.") var httpRate: Int = 1250
    @Option(help: "Length of the whole-path phase in seconds (0 skips it).") var httpSeconds: Int = 10

    func run() async throws {
        do {
            try validateRanges([("--rate", rate, 1...20_000), ("--seconds", seconds, 1...3_600), ("--ingest", ingest, 1...2_000_000), ("--rows", rows, 0...20_000_000), ("--queries", queries, 1...100_000), ("--http-rate", httpRate, 1...20_000), ("--http-seconds", httpSeconds, 0...3_600)])
        } catch {
            throw fail(error)
        }
        let missed: Bool
        do {
            missed = try await withPrivateOMSDeployment(home: options.resolvedHome, label: "bench-audit", audit: true) { deployment in
                try await measure(deployment)
            }
        } catch {
            throw fail(error)
        }
        if missed { throw ExitCode(1) }
    }

    private func measure(_ deployment: PrivateOMSDeployment) async throws -> Bool {
        guard let postgresURL = deployment.endpoints.postgresURL, let natsURL = deployment.endpoints.natsURL, let auditURL = deployment.auditBaseURL else {
            throw ProdReadyError(.configuration, "the private stack reported no Postgres, NATS or audit URL")
        }
        let validator = PerformanceValidator()
        var accountingFailed = false
        let subjects = AuditSubjects()
        let logger = Logger(label: "bench-audit", factory: { _ in SwiftLogNoOpLogHandler() })
        try await withPostgresClient(postgresURL) { postgres in
            // 1. Propagation at a steady rate.
            let tenant = "bench-propagation"
            let outbox = Outbox(client: postgres, schema: try SQLIdentifier("oms"), logger: logger)
            let total = rate * seconds
            progress("propagation phase: \(total) audit events committed to the OMS outbox at \(rate)/s")
            let clock = ContinuousClock()
            let began = clock.now
            let tick: Duration = .milliseconds(10)
            var committed = 0
            var slow = 0
            while committed < total {
                let due = began + tick * ((committed * 100) / rate)
                if clock.now < due { try await clock.sleep(until: due) } else if clock.now - due > .milliseconds(50) { slow += 1 }
                let count = min(total - committed, max(1, rate / 100))
                let messages = try (0..<count).map { index in
                    try OutboxMessage(.audit(id: UUID().uuidString.lowercased(), at: Date(), correlationID: nil, causationID: nil, AuditRecord(
                        eventType: "bench.propagation", action: "create", actor: AuditActor(id: "bench", username: "bench", tenantID: tenant),
                        target: AuditTarget(resourceType: "instance", resourceID: "p\(committed + index)"))), source: "oms", subject: subjects.subject(of: "bench.propagation"))
                }
                try await outbox.transaction { try await $0.enqueue(contentsOf: messages) }
                committed += count
            }
            let sending = clock.now - began
            progress("committed \(total) in \(format(sending.milliseconds)) ms; waiting for the audit service to store them")
            try await waitForRows(postgres, tenant: tenant, count: total, timeout: .seconds(300))
            var propagation = await validator.newMeasurement("audit propagation, OMS commit -> stored row at \(rate) events/s", thresholds: [.latency(percentile: 95, atMost: .milliseconds(100))])
            let delays = try await postgres.query("SELECT (extract(epoch FROM created_at - event_time) * 1000000)::bigint FROM audit.audit_events WHERE actor_tenant_id = \(tenant)").collect()
            for row in delays { propagation.record(latency: .microseconds(max(0, try row.decode(Int64.self)))) }
            propagation.elapsed = sending
            await validator.add(propagation)
            if slow > 0 { print("note: the bench fell behind its schedule \(slow) times (a transaction took longer than its 10 ms slot)") }

            // 1b. The whole path from HTTP.
            if httpSeconds > 0 {
                let report = try await measureRefusedWrites(deployment, postgres: postgres, validator: validator)
                print("\(report.isClean ? "✅" : "❌") whole path from HTTP, every refused write audited once: \(report)")
                if !report.isClean { accountingFailed = true }
            }

            // 2. Sustained ingest: a backlog on the stream, stored as fast as the audit service can.
            progress("ingest phase: stopping the audit service and publishing \(ingest) events")
            try await deployment.services.stop("audit")
            let nats = try await NATSConnection(url: natsURL)
            let ingestTenant = "bench-ingest"
            var outgoing: [JetStreamOutgoing] = []
            outgoing.reserveCapacity(ingest)
            for index in 0..<ingest {
                let envelope: EventEnvelope<AuditRecord> = .audit(id: UUID().uuidString.lowercased(), at: Date(), correlationID: nil, causationID: nil, AuditRecord(
                    eventType: "bench.ingest", action: "create", actor: AuditActor(id: "actor-\(index % 50)", username: "bench", tenantID: ingestTenant),
                    target: AuditTarget(resourceType: "instance", resourceID: "i\(index)")))
                outgoing.append(JetStreamOutgoing(subject: subjects.subject(of: "bench.ingest"), payload: try envelope.encoded(), messageID: envelope.id))
            }
            for start in stride(from: 0, to: outgoing.count, by: 5_000) {
                let results = try await nats.publishAsync(Array(outgoing[start..<min(start + 5_000, outgoing.count)]), window: 1024, timeout: .seconds(60))
                if let failure = results.first(where: { if case .failure = $0 { true } else { false } }) { throw ProdReadyError(.serverError, "publishing the backlog failed: \(failure)") }
            }
            progress("starting the audit service with \(ingest) events waiting")
            let ingestBegan = clock.now
            try await deployment.services.start("audit")
            try await waitForRows(postgres, tenant: ingestTenant, count: ingest, timeout: .seconds(600))
            var fromStart = await validator.newMeasurement("audit ingest including the service's start-up, \(ingest) events from the stream into audit_events", thresholds: [])
            fromStart.elapsed = clock.now - ingestBegan
            fromStart.record(operations: ingest)
            await validator.add(fromStart)
            // The sustained rate: from the first batch's transaction to the last one's, as Postgres timed them
            // (created_at is each transaction's start), without the process's start-up and subscription. The
            // first batch's events are not counted: their transaction began at the start of the span.
            let span = try await postgres.query("""
                SELECT extract(epoch FROM max(created_at) - min(created_at))::float8, count(*) FILTER (WHERE created_at > m.first)::bigint
                FROM audit.audit_events, (SELECT min(created_at) AS first FROM audit.audit_events WHERE actor_tenant_id = \(ingestTenant)) m
                WHERE actor_tenant_id = \(ingestTenant)
                """).collect().first?.decode((Double, Int64).self)
            if let (seconds, afterFirst) = span, seconds > 0 {
                var sustained = await validator.newMeasurement(
                    "audit sustained ingest: the \(afterFirst) events stored after the first batch, first to last transaction", thresholds: [.throughput(atLeast: 10_000)])
                sustained.elapsed = .milliseconds(Int64(seconds * 1_000))
                sustained.record(operations: Int(afterFirst))
                await validator.add(sustained)
            }

            // 3. A filtered page over many events.
            if rows > 0 {
                progress("query phase: loading \(rows) events with INSERT … SELECT generate_series")
                let loadBegan = clock.now
                let queryTenant = "bench-query"
                _ = try await postgres.query("""
                    INSERT INTO audit.audit_events (event_id, event_type, action, actor_id, actor_username, actor_tenant_id, target_resource_type, target_resource_id,
                                                    target_resource_name, success, error_code, changes, tags, event_time)
                    SELECT 'load-' || g, 'load.type' || (g % 20), (ARRAY['create','update','delete'])[1 + g % 3], 'actor-' || (g % 50), 'user ' || (g % 50), \(queryTenant),
                           'instance', 'db/Product/' || g, 'Product ' || (g % 1000), g % 17 <> 0, CASE WHEN g % 17 = 0 THEN 'optimistic_concurrency_conflict' END,
                           jsonb_build_object('after', jsonb_build_object('name', 'item ' || g)), '["oms"]'::jsonb,
                           now() - (g % 2592000) * interval '1 second'
                    FROM generate_series(1, \(rows)) AS g
                    """).collect()
                // A long-lived table is vacuumed: without it every index scan also visits the heap, and autovacuum would
                // be working through the million new rows while the pages are timed.
                _ = try await postgres.query("VACUUM ANALYZE audit.audit_events").collect()
                print("loaded \(rows) events in \(format((clock.now - loadBegan).milliseconds / 1000)) s")
                let token = try await TokenAuthority(secret: try ServiceSecrets.jwtSecret(home: deployment.home)).mint(subject: "bench", roles: ["auditor"], tenant: queryTenant, ttl: .seconds(3600))
                let client = ServiceClient(baseURL: auditURL, token: token)
                let week = InternetTime.format(Date().addingTimeInterval(-7 * 86_400))
                let filters = ["event_type=load.type7", "actor_id=actor-13", "actor_id=actor-21&action=update", "event_type=load.type3&from=\(week)", "success=false", "target_resource_type=instance&target_resource_id=db/Product/4242"]
                var page = await validator.newMeasurement("audit API, a filtered page of 50 over \(rows) events", thresholds: [.latency(percentile: 95, atMost: .milliseconds(20))])
                let pageBegan = clock.now
                var perFilter = Array(repeating: [Duration](), count: filters.count)
                for index in 0..<queries {
                    let started = clock.now
                    let answer = try await client.get("/api/v1/audit/events?limit=50&\(filters[index % filters.count])")
                    guard answer.status == 200 else { throw ProdReadyError(.serverError, "a filtered page answered \(answer.status): \(answer)") }
                    page.record(latency: clock.now - started)
                    perFilter[index % filters.count].append(clock.now - started)
                }
                page.elapsed = clock.now - pageBegan
                for (filter, latencies) in zip(filters, perFilter) where !latencies.isEmpty {
                    let sorted = latencies.sorted()
                    print("  \(filter): p50 \(format(sorted[sorted.count / 2].milliseconds)) ms, max \(format(sorted[sorted.count - 1].milliseconds)) ms")
                }
                await validator.add(page)
            }
        }
        for record in await deployment.services.records() {
            print("peak resident memory of \(record.name): \(record.identity.flatMap { peakResidentMegabytes(pid: $0.pid) }.map { format($0) + " MB" } ?? "unknown")  (goal < 150 MB)")
        }
        let missed = !(await validator.summarize()).isEmpty
        return missed || accountingFailed
    }

    /// Phase 1b: writes without a token, sent open loop at `httpRate` to a database of the bench's own. Each is
    /// refused with 401 and audited for the database's owner: a request to the OMS, an outbox row committed with
    /// the refusal, the relay, the stream, the audit service, the stored row. The cheapest audited request, so the
    /// one that can reach 1,000 events/s from HTTP on this machine; accepted writes stop near 170/s at the OMS.
    private func measureRefusedWrites(_ deployment: PrivateOMSDeployment, postgres: PostgresClient, validator: PerformanceValidator) async throws -> LossReport {
        let tenant = "bench-http"
        let database = "bench-http"
        let owner = try await deployment.client(tenant: tenant)
        try await OMSCommands.complete(owner, "POST", "/api/v1/database/create", ["name": .string(database)])
        let clock = ContinuousClock()

        let total = httpRate * httpSeconds
        progress("whole-path phase: \(total) writes without a token to \(database) at \(httpRate)/s")
        let attacker = ServiceClient(baseURL: deployment.baseURL)
        let ledger = OperationLedger()
        let firstSent = Date()
        let began = clock.now
        var answers = await validator.newMeasurement("OMS refused write (401, audited) at \(httpRate)/s, API latency", thresholds: [])
        let outcomes = try await withThrowingTaskGroup(of: (latency: Duration, status: Int?, failure: String?).self) { group in
            for index in 0..<total {
                try await clock.sleep(until: began + .microseconds(Int64(index) * 1_000_000 / Int64(httpRate)))
                group.addTask {
                    let id = "bench-http-\(index)"
                    let sent = clock.now
                    // Only a 401 promises an audit event; a timeout may or may not have made one.
                    let answer: ServiceResponse
                    do {
                        answer = try await attacker.request(
                            "POST", "/api/v1/database/\(database)/ontology", json: ["id": "Stolen", "label": "Stolen"], headers: [("X-Request-ID", id)], timeout: .seconds(30))
                    } catch {
                        ledger.indeterminate(id)
                        return (clock.now - sent, nil, "\(error)")
                    }
                    if answer.status == 401 { ledger.acknowledged(id) } else { ledger.refused(id) }
                    return (clock.now - sent, answer.status, nil)
                }
            }
            var outcomes: [(latency: Duration, status: Int?, failure: String?)] = []
            for try await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        answers.elapsed = clock.now - began
        outcomes.forEach { answers.record(latency: $0.latency) }
        await validator.add(answers)
        let otherStatuses = Dictionary(grouping: outcomes.compactMap(\.status).filter { $0 != 401 }, by: { $0 }).mapValues(\.count)
        if !otherStatuses.isEmpty || ledger.count(.indeterminate) > 0 {
            print("note: of \(total) writes without a token, \(ledger.count(.indeterminate)) got no answer and these got another status than 401: \(otherStatuses.sorted { $0.key < $1.key }); the first failure: \(outcomes.lazy.compactMap(\.failure).first ?? "none")")
        }

        progress("sent \(total) in \(format(answers.elapsed.milliseconds)) ms; waiting for their audit events")
        let report = try await LossAccounting.converge(ledger, since: began, timeout: .seconds(120), interval: .milliseconds(200)) {
            try await postgres.query("""
                SELECT coalesce(request_id, '(none)') FROM audit.audit_events WHERE actor_tenant_id = \(tenant) AND event_type = 'auth.unauthorized'
                """).collect().map { try $0.decode(String.self) }
        }
        // Once, after the accounting: each stored row's propagation and when it was stored.
        let rows = try await postgres.query("""
            SELECT (extract(epoch FROM created_at - event_time) * 1000000)::bigint, extract(epoch FROM created_at)::float8
            FROM audit.audit_events WHERE actor_tenant_id = \(tenant) AND event_type = 'auth.unauthorized'
            """).collect().map { try $0.decode((Int64, Double).self) }

        var propagation = await validator.newMeasurement(
            "audit propagation of refused writes from HTTP, OMS commit -> stored row at \(httpRate)/s offered", thresholds: [.latency(percentile: 95, atMost: .seconds(1))])
        rows.forEach { propagation.record(latency: .microseconds(max(0, $0.0))) }
        propagation.elapsed = answers.elapsed
        await validator.add(propagation)
        if let lastStored = rows.map(\.1).max() {
            var wholePath = await validator.newMeasurement(
                "audit events through the whole path from HTTP (first request sent -> last row stored)", thresholds: [.throughput(atLeast: 1_000)])
            wholePath.elapsed = .milliseconds(Int64((lastStored - firstSent.timeIntervalSince1970) * 1_000))
            wholePath.record(operations: rows.count)
            await validator.add(wholePath)
        }
        return report
    }

    /// Polls until `tenant` has `count` stored events.
    private func waitForRows(_ postgres: PostgresClient, tenant: String, count: Int, timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var stored = 0
        while true {
            stored = Int(try await postgres.query("SELECT count(*)::bigint FROM audit.audit_events WHERE actor_tenant_id = \(tenant)").collect().first?.decode(Int64.self) ?? 0)
            if stored >= count { return }
            guard clock.now < deadline else { throw ProdReadyError(.timeout, "\(stored) of \(count) events of \(tenant) stored after \(timeout)") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    private func format(_ value: Double) -> String { value < 100 ? String(format: "%.1f", value) : String(Int(value.rounded())) }
}
