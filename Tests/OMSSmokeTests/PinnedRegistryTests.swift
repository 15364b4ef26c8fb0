import Testing
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
import ProdReadyReliability
import TestSupport

/// The registry's fast path — a pool pinned to one event loop whose connections resolve names in the registry's
/// schema, so claim and markDone are named prepared statements — must make exactly the spec's transitions.
@Suite("OMS fast layer: registry on a pinned pool with prepared statements", .requires(.postgres))
struct PinnedRegistryTests {
    /// What a script step answered: a claim outcome, "ok", or the error code.
    static func answer(_ step: () async throws -> ClaimOutcome) async -> String {
        do { return try await step().description } catch let error as ProdReadyError { return "error \(error.code)" } catch { return "unexpected \(error)" }
    }

    static func answer(_ step: () async throws -> Void) async -> String {
        do { try await step(); return "ok" } catch let error as ProdReadyError { return "error \(error.code)" } catch { return "unexpected \(error)" }
    }

    /// Two workers (a, b) on one handler: duplicates, a live lease, a refused non-owner, the ordering guard, finishes
    /// that claim the next event (including refused ones, which claim nothing), and a lease taken over after expiry.
    static func script(_ a: ProcessedEventRegistry, _ b: ProcessedEventRegistry, handler h: String, client: PostgresClient, schema: SQLIdentifier) async throws -> [String] {
        var log: [String] = []
        log.append(await answer { try await a.claim(handler: h, eventID: "e1", aggregateID: "A", sequence: 1) })
        log.append(await answer { try await b.claim(handler: h, eventID: "e1", aggregateID: "A", sequence: 1) })
        log.append(await answer { try await b.markDone(handler: h, eventID: "e1") })
        log.append(await answer { try await a.markDone(handler: h, eventID: "e1") })
        log.append(await answer { try await a.claim(handler: h, eventID: "e1", aggregateID: "A", sequence: 1) })
        log.append(await answer { try await a.claim(handler: h, eventID: "e0", aggregateID: "A", sequence: 1) })
        log.append(await answer { try await a.claim(handler: h, eventID: "e2", aggregateID: "A", sequence: 2) })
        log.append(await answer { try await a.markDone(handler: h, eventID: "e2", thenClaim: EventDelivery(eventID: "e3", aggregateID: "A", sequence: 3)) })
        log.append(await answer { try await b.markDone(handler: h, eventID: "e3", thenClaim: EventDelivery(eventID: "e4", aggregateID: "A", sequence: 4)) })
        log.append(await answer { try await a.markDone(handler: h, eventID: "never", thenClaim: EventDelivery(eventID: "e5")) })
        log.append(await answer { try await a.markDone(handler: h, eventID: "e3", thenClaim: EventDelivery(eventID: "e2", aggregateID: "A", sequence: 2)) })
        log.append(await answer { try await a.claim(handler: h, eventID: "e6") })
        try await client.query("""
            UPDATE \(unescaped: schema.quoted).processed_events SET heartbeat_at = now() - interval '1 hour' WHERE handler = \(h) AND event_id = 'e6'
            """)
        log.append(await answer { try await b.claim(handler: h, eventID: "e6") })
        log.append(await answer { try await a.markDone(handler: h, eventID: "e6") })
        log.append(await answer { try await b.markDone(handler: h, eventID: "e6", thenClaim: EventDelivery(eventID: "e7")) })
        log.append(await answer { try await b.markDone(handler: h, eventID: "e7") })
        log.append(await answer { try await a.markDone(handler: h, eventID: "e1") })
        return log
    }

    static let expected = [
        "claimed (attempt 1)", "inProgress", "error not_owner", "ok", "duplicateDone", "stale", "claimed (attempt 1)",
        "claimed (attempt 1)", "error not_owner", "error not_found", "duplicateDone", "claimed (attempt 1)",
        "claimed (attempt 2)", "error not_owner", "claimed (attempt 1)", "ok", "ok",
    ]

    static func rows(_ client: PostgresClient, _ schema: SQLIdentifier, handler: String) async throws -> [String] {
        let query: PostgresQuery = """
            SELECT event_id, coalesce(aggregate_id, '-'), coalesce(sequence_number, -1), status, owner, attempt_count
            FROM \(unescaped: schema.quoted).processed_events WHERE handler = \(handler) ORDER BY event_id
            """
        var rows: [String] = []
        for row in try await client.query(query).collect() {
            let (event, aggregate, sequence, status, owner, attempts) = try row.decode((String, String, Int64, String, String, Int).self)
            rows.append("\(event) \(aggregate) \(sequence) \(status) \(owner) \(attempts)")
        }
        return rows
    }

    @Test(
        "the same script gives the spec's outcomes, rows and last sequence on a pinned pool (prepared statements) as on a plain pool, with claims committed synchronously or asynchronously",
        arguments: [ProcessedEventRegistry.ClaimCommit.synchronous, .asynchronous]
    )
    func sameTransitions(claimCommit: ProcessedEventRegistry.ClaimCommit) async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        try await withSchema { clients, schema in
            try await withPinnedPostgresClients(url, count: 2, maximumConnections: 1, searchPath: schema) { pools in
                func options(_ owner: String) -> ProcessedEventRegistry.Options { .init(owner: owner, claimCommit: claimCommit) }
                let plainLog = try await Self.script(
                    try ProcessedEventRegistry(client: clients[0], schema: schema, options: options("worker-a")),
                    try ProcessedEventRegistry(client: clients[0], schema: schema, options: options("worker-b")),
                    handler: "plain", client: clients[0], schema: schema
                )
                let pinnedA = try ProcessedEventRegistry(pool: pools[0], schema: schema, options: options("worker-a"))
                let pinnedB = try ProcessedEventRegistry(pool: pools[1], schema: schema, options: options("worker-b"))
                let pinnedLog = try await withTaskExecutorPreference(pools[0].executor) {
                    try await Self.script(pinnedA, pinnedB, handler: "pinned", client: clients[0], schema: schema)
                }
                #expect(plainLog == Self.expected)
                #expect(pinnedLog == Self.expected)
                let plainRows = try await Self.rows(clients[0], schema, handler: "plain")
                #expect(plainRows.count == 6, "\(plainRows)")
                #expect(try await Self.rows(clients[0], schema, handler: "pinned") == plainRows)
                #expect(try await lastSequence(clients[0], schema, handler: "pinned", aggregateID: "A") == 3)
                #expect(try await lastSequence(clients[0], schema, handler: "plain", aggregateID: "A") == 3)

                // Batch claims take the same commit mode and make the same decisions.
                let batch = try await pinnedA.claimBatch(handler: "batch", [
                    EventDelivery(eventID: "b1", aggregateID: "B", sequence: 1), EventDelivery(eventID: "b1", aggregateID: "B", sequence: 1),
                ])
                #expect(batch == [.claimed(attempt: 1), .inProgress])

                // The pinned registries really took the prepared path, with the claim statement of their mode.
                var prepared: Set<String> = []
                for row in try await pools[0].client.query("SELECT name FROM pg_prepared_statements").collect() {
                    prepared.insert(try row.decode(String.self))
                }
                let claim = claimCommit == .synchronous ? "prodready_claim_m2" : "prodready_claim_async_m2"
                let otherClaim = claimCommit == .synchronous ? "prodready_claim_async_m2" : "prodready_claim_m2"
                #expect(prepared.isSuperset(of: [claim, "prodready_mark_done_m2", "prodready_mark_done_then_claim_m4"]), "\(prepared)")
                #expect(!prepared.contains(otherClaim), "\(prepared)")
            }
        }
    }

    @Test("on a schema never migrated, the prepared path fails with not_found naming the missing function; bad input is refused before anything is sent")
    func unmigratedSchemaAndBadInput() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        let schema = try SQLIdentifier(uniqueName("never_migrated").replacingAll("-", with: "_"))
        try await withPinnedPostgresClients(url, count: 1, maximumConnections: 1, searchPath: schema) { pools in
            let worker = try ProcessedEventRegistry(pool: pools[0], schema: schema, options: .init(owner: "worker-a"))
            let missing = await #expect(throws: ProdReadyError.self) { try await worker.claim(handler: "h", eventID: "e1") }
            #expect(missing?.code == .notFound, "\(String(describing: missing))")
            #expect(missing?.message.contains("prodready_claim") == true, "\(String(describing: missing))")
            let finish = await #expect(throws: ProdReadyError.self) { try await worker.markDone(handler: "h", eventID: "e1", thenClaim: EventDelivery(eventID: "e2")) }
            #expect(finish?.code == .notFound, "\(String(describing: finish))")
            let calls: [(String, @Sendable () async throws -> Void)] = [
                ("empty handler", { _ = try await worker.claim(handler: "", eventID: "e1") }),
                ("empty event id", { try await worker.markDone(handler: "h", eventID: "") }),
                ("negative sequence", { _ = try await worker.markDone(handler: "h", eventID: "e1", thenClaim: EventDelivery(eventID: "e2", aggregateID: "A", sequence: -1)) }),
            ]
            for (what, call) in calls {
                let refused = await #expect(throws: ProdReadyError.self, "\(what)") { try await call() }
                #expect(refused?.code == .invalidArgument, "\(what): \(String(describing: refused))")
            }
        }
    }

    @Test("a pinned pool whose search path is another schema falls back to schema-qualified SQL")
    func otherSearchPathIsNotPrepared() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        try await withSchema { clients, schema in
            try await withPinnedPostgresClients(url, count: 1, maximumConnections: 1, searchPath: try SQLIdentifier("public")) { pools in
                let worker = try ProcessedEventRegistry(pool: pools[0], schema: schema, options: .init(owner: "worker-a"))
                #expect(try await worker.claim(handler: "h", eventID: "e1") == .claimed(attempt: 1))
                try await worker.markDone(handler: "h", eventID: "e1")
                #expect(try await processedRow(clients[0], schema, handler: "h", eventID: "e1")?.status == "done")
                let prepared = try await pools[0].client.query("SELECT count(*)::int8 FROM pg_prepared_statements WHERE name LIKE 'prodready_%'").collect()
                #expect(try prepared.first?.decode(Int64.self) == 0)
            }
        }
    }
}
